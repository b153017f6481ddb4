"""A source folder with every kind of bad file beside good videos: each bad one gets its documented outcome
(listed as missing, left out, excluded as too short or too small for the run, or failed with a message saying
what it is), and every good video is decoded.

Kinds decided at run level (one file under two spellings, a target test video in the source, a header-only or
malformed CSV) are refused at ingest: tests/tasks/data/test_leaks.py, tests/flows/test_preprocess_flows.py and
tests/tasks/data/test_ingest.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import sample_video

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_videos
from motionfit.tasks.data.ingest import ingest_folder, video_id_for

PNG_1x1 = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00\x00"
    b"\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)
CONFIG = DecodeConfig(short_side=32, min_frames=8)


def _write_video(path: Path, n_frames: int, width: int, height: int, color: bool = True) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (width, height), color)
    rng = np.random.default_rng(n_frames + width)
    for _ in range(n_frames):
        shape = (height, width, 3) if color else (height, width)
        writer.write(rng.integers(0, 255, shape, dtype=np.uint8))
    writer.release()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "videos"
    folder.mkdir()
    mp4 = sample_video("carphone_pristine.mp4").read_bytes()
    _write_video(folder / "good.avi", 12, 64, 48)
    _write_video(folder / "with space é.avi", 12, 64, 48)  # spaces and non-ASCII in the name
    _write_video(folder / "gray.avi", 12, 64, 48, color=False)
    _write_video(folder / "wide.avi", 12, 400, 32)
    _write_video(folder / "tall.avi", 12, 32, 400)
    _write_video(folder / "thumbnail.avi", 12, 16, 12)
    _write_video(folder / "one_frame.avi", 1, 64, 48)
    _write_video(folder / "short.avi", 5, 64, 48)  # fewer frames than min_frames
    (folder / "carphone.mp4").write_bytes(mp4)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.avi").write_text("not a video\n")
    (folder / "picture.avi").write_bytes(PNG_1x1)
    (folder / "cut_header.mp4").write_bytes(mp4[:2048])
    (folder / "cut_tail.mp4").write_bytes(mp4[: len(mp4) // 2])
    (folder / "noise.mkv").write_bytes(bytes(range(3, 250)))
    (folder / "dangling.mp4").symlink_to(folder / "deleted.mp4")
    _write_video(folder / ".hidden.avi", 12, 64, 48)
    (folder / "readme.txt").write_text("not listed: no video extension")
    return folder


EXPECTED = {
    "good.avi": ("done", None),
    "with space é.avi": ("done", None),
    "gray.avi": ("done", None),
    "wide.avi": ("done", None),
    "tall.avi": ("done", None),
    "carphone.mp4": ("done", None),
    "thumbnail.avi": ("excluded", "is 16x12 px, smaller than decode.min_side 32 on its shorter side"),
    "one_frame.avi": ("excluded", "yields 1 frames, fewer than the 8 the run needs"),
    "short.avi": ("excluded", "yields 5 frames, fewer than the 8 the run needs"),
    "empty.mp4": ("failed", "is empty (0 bytes)"),
    "notes.avi": ("failed", "holds text, not video"),
    "picture.avi": ("failed", "is a PNG image, not a video"),
    "cut_header.mp4": ("failed", "is a truncated or damaged MP4/MOV file (2048 bytes)"),
    "cut_tail.mp4": ("failed", "is a truncated or damaged MP4/MOV file"),
    "noise.mkv": ("failed", "is in no video container the decoder knows"),
    "dangling.mp4": ("missing", "dangling symbolic link: "),
}


def test_every_kind_of_bad_file_gets_its_outcome_and_every_good_video_is_decoded(
    corpus: Path, tmp_path: Path
) -> None:
    manifest = ingest_folder(corpus)
    names = {Path(path).name for path in manifest["path"]}
    assert names == set(EXPECTED), "hidden files and other extensions are left out"
    missing = manifest[manifest["status"] != "ok"]
    assert list(missing["path"].map(lambda p: Path(p).name)) == ["dangling.mp4"]
    assert missing["error"].iloc[0].startswith(EXPECTED["dangling.mp4"][1])

    readable = manifest[manifest["status"] == "ok"]
    layout = RunLayout.at(tmp_path / "run")
    outcomes = decode_videos(list(zip(readable["video_id"], readable["path"], strict=True)), layout, CONFIG)
    by_name = {Path(p).name: o for p, o in zip(readable["path"], outcomes, strict=True)}
    for name, (status, message) in EXPECTED.items():
        if status == "missing":
            continue
        outcome = by_name[name]
        assert outcome.status == status, (name, outcome)
        if message is not None:
            said = outcome.reason if status == "excluded" else outcome.error
            assert message in said and name in said, (name, outcome)
    frames = layout.store("frames")
    good = [name for name, (status, _) in EXPECTED.items() if status == "done"]
    assert frames.committed_ids() == {video_id_for("source", name) for name in good}
    assert frames.read(video_id_for("source", "gray.avi")).shape[-1] == 3
    assert min(frames.shape(video_id_for("source", "wide.avi"))[1:3]) == 32


def test_an_excluded_video_stays_excluded_until_its_file_or_the_config_changes(
    corpus: Path, tmp_path: Path
) -> None:
    names = ["good.avi", "short.avi", "thumbnail.avi"]
    videos = [(video_id_for("source", name), str(corpus / name)) for name in names]
    layout = RunLayout.at(tmp_path / "run")
    assert [o.status for o in decode_videos(videos, layout, CONFIG)] == ["done", "excluded", "excluded"]
    markers = layout.store("frames").markers
    assert set(markers.exclusions()) == {videos[1][0], videos[2][0]} and markers.failures() == {}

    again = decode_videos(videos, layout, CONFIG)
    assert [(o.status, o.seconds) for o in again] == [("skipped", 0.0), ("excluded", 0.0), ("excluded", 0.0)]
    assert "yields 5 frames" in again[1].reason, "the recorded reason, without decoding the file again"

    shorter_clips = CONFIG.model_copy(update={"min_frames": 4})
    statuses = [o.status for o in decode_videos(videos, layout, shorter_clips)]
    assert statuses == ["skipped", "done", "excluded"], "the committed video is not decoded again"
    assert set(markers.exclusions()) == {videos[2][0]}
