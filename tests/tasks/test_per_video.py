"""The per-video map: committed videos are skipped only while their inputs are unchanged."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data import decode
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_videos
from motionfit.tasks.data.ingest import build_manifest, synthetic_data_config
from motionfit.tasks.idt import stage as idt_stage
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.stage import extract_idt_videos
from motionfit.tasks.motion import tvl1
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import compute_flows
from motionfit.tasks.per_video import inputs_key, is_transient, map_videos


def test_recorded_inputs_key_decides_what_is_recomputed(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    store = layout.store("flow")
    calls: list[str] = []
    keys = {"a": "k1", "b": "k1", "c": "k1"}

    def process(video_id: str) -> None:
        calls.append(video_id)
        store.write(video_id, np.zeros((1, 2, 2, 2), np.uint8))

    statuses = [o.status for o in map_videos(list(keys), store.markers, process, keys.get)]
    assert statuses == ["done", "done", "done"]
    assert [o.status for o in map_videos(list(keys), store.markers, process, keys.get)] == ["skipped"] * 3
    keys["b"] = "k2"
    map_videos(list(keys), store.markers, process, keys.get)
    assert calls == ["a", "b", "c", "b"]
    assert store.markers.committed_info("b")["inputs_key"] == "k2"


def test_a_batch_reads_its_own_videos_markers_and_lists_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O(batch) bookkeeping: listing the stage's commits in every batch costs O(N) per batch at scale."""
    store = RunLayout.at(tmp_path).store("flow")
    for index in range(50):
        store.markers.commit(f"other{index}", {"inputs_key": "k"})
    monkeypatch.setattr(
        "motionfit.storage.fs.list_names", lambda *args: pytest.fail("a batch listed the stage's markers")
    )
    read: list[str] = []
    original = store.markers.commit_record.__func__

    def counting(markers, video_id):
        read.append(video_id)
        return original(markers, video_id)

    monkeypatch.setattr(type(store.markers), "commit_record", counting)
    keys = {"other3": "k", "new": "k"}
    outcomes = map_videos(
        list(keys), store.markers, lambda v: store.write(v, np.zeros((1, 2, 2, 2), np.uint8)), keys.get
    )
    assert [o.status for o in outcomes] == ["skipped", "done"]
    assert read == ["other3", "new"]


def test_inputs_key_changes_with_config_values() -> None:
    assert inputs_key(DecodeConfig(short_side=32), "x") == inputs_key(DecodeConfig(short_side=32), "x")
    assert inputs_key(DecodeConfig(short_side=32), "x") != inputs_key(DecodeConfig(short_side=24), "x")


def test_new_decode_config_recomputes_frames_and_then_their_flow(
    micro_synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = build_manifest(synthetic_data_config(micro_synth_root)).head(3)
    videos = list(zip(manifest["video_id"], manifest["path"], strict=True))
    ids = [video_id for video_id, _ in videos]
    layout = RunLayout.at(tmp_path / "run")
    calls: list[int] = []
    original = tvl1.compute_tvl1_flow

    def counting(frames, config):
        calls.append(1)
        return original(frames, config)

    monkeypatch.setattr(tvl1, "compute_tvl1_flow", counting)
    decode_videos(videos, layout, DecodeConfig(short_side=32))
    compute_flows(ids, layout, FlowConfig())
    compute_flows(ids, layout, FlowConfig(threads_per_worker=2))  # thread count does not change the result
    assert len(calls) == 3
    decode_videos(videos, layout, DecodeConfig(short_side=16))
    assert layout.store("frames").shape(ids[0])[1:3] == (16, 16)
    compute_flows(ids, layout, FlowConfig())
    assert len(calls) == 6
    assert layout.store("flow").shape(ids[0])[1:3] == (16, 16)


def test_stale_video_whose_recomputation_fails_is_no_longer_committed(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    store = layout.store("flow")

    def write(video_id: str) -> None:
        store.write(video_id, np.zeros((1, 2, 2, 2), np.uint8))

    def fail(video_id: str) -> None:
        raise RuntimeError(f"cannot recompute {video_id}")

    map_videos(["a"], store.markers, write, {"a": "k1"}.get)
    outcomes = map_videos(["a"], store.markers, fail, {"a": "k2"}.get)
    assert outcomes[0].status == "failed" and "cannot recompute a" in outcomes[0].error
    assert store.committed_ids() == set()
    assert store.markers.failures() == {"a": "RuntimeError: cannot recompute a"}


def test_a_stage_code_version_recomputes_that_stage_and_what_reads_it(
    micro_synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = build_manifest(synthetic_data_config(micro_synth_root)).head(2)
    videos = list(zip(manifest["video_id"], manifest["path"], strict=True))
    ids = [video_id for video_id, _ in videos]
    layout = RunLayout.at(tmp_path / "run")
    idt_config = IdtConfig(min_distance=3, min_camera_displacement=0.3)

    def run_all() -> list[list[str]]:
        return [
            [o.status for o in decode_videos(videos, layout, DecodeConfig(short_side=32))],
            [o.status for o in compute_flows(ids, layout, FlowConfig())],
            [o.status for o in extract_idt_videos(ids, layout, idt_config)],
        ]

    assert run_all() == [["done"] * 2] * 3
    assert run_all() == [["skipped"] * 2] * 3
    flow_before = {v: layout.store("flow").read(v) for v in ids}
    monkeypatch.setattr(tvl1, "CODE_VERSION", tvl1.CODE_VERSION + 1)
    assert run_all() == [["skipped"] * 2, ["done"] * 2, ["skipped"] * 2]  # reference-mode IDT reads no flow
    for video_id in ids:
        np.testing.assert_array_equal(layout.store("flow").read(video_id), flow_before[video_id])
    monkeypatch.setattr(decode, "CODE_VERSION", decode.CODE_VERSION + 1)
    # decoded again to the same pixels: their checksums are unchanged, so nothing downstream is redone
    assert run_all() == [["done"] * 2, ["skipped"] * 2, ["skipped"] * 2]
    monkeypatch.setattr(idt_stage, "CODE_VERSION", idt_stage.CODE_VERSION + 1)
    assert run_all() == [["skipped"] * 2, ["skipped"] * 2, ["done"] * 2]


def test_a_transient_error_fails_the_batch_instead_of_the_video(tmp_path: Path) -> None:
    store = RunLayout.at(tmp_path).store("flow")

    def unreachable(video_id: str) -> None:
        raise ConnectionError(f"object store unreachable while writing {video_id}")

    with pytest.raises(ConnectionError, match="unreachable"):
        map_videos(["a"], store.markers, unreachable)
    assert store.markers.failures() == {}, "the video is not recorded as bad input"
    assert is_transient(TimeoutError()) and is_transient(OSError(errno.ESTALE, "stale file handle"))
    assert not is_transient(FileNotFoundError(errno.ENOENT, "missing")) and not is_transient(ValueError())
