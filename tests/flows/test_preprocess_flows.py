"""Ingest, decode and TV-L1 flow as Prefect flows: failures are isolated and re-runs resume exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from motionfit.cli import main
from motionfit.config import PipelineConfig
from motionfit.flows import preprocess
from motionfit.flows.pipeline import pipeline_flow
from motionfit.flows.preprocess import decode_flow, ingest_flow, tvl1_flow
from motionfit.flows.video_stages import TooManyFailuresError
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import load_manifest
from motionfit.storage.tables import read_table
from motionfit.tasks.data.ingest import synthetic_data_config
from motionfit.tasks.data.preflight import DataProblems
from motionfit.tasks.motion import tvl1

pytestmark = pytest.mark.slow

MJPG = cv2.VideoWriter_fourcc(*"MJPG")


def _config(data_root: Path, run_root: Path) -> PipelineConfig:
    """Two methods whose clips of 8 frames need 9 of the data set's 10 (see ``frames_needed``)."""
    return PipelineConfig.model_validate(
        {
            "run_root": str(run_root),
            "methods": ["scratch", "teacher"],
            "teacher": {"clip_length": 8},
            "finetune": {"clip_length": 8},
            "data": synthetic_data_config(data_root).model_dump(),
            "decode": {"short_side": 32},
            "runtime": {"videos_per_batch": 4, "max_workers": 2},
        }
    )


@pytest.fixture
def data_root(micro_synth_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(micro_synth_root, root)
    return root


def _count_flow_calls(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[int]:
    calls: list[int] = []
    original = tvl1.compute_tvl1_flow

    def counting(frames, config):
        calls.append(1)
        if fail_after is not None and len(calls) > fail_after:
            raise RuntimeError("simulated worker crash")
        return original(frames, config)

    monkeypatch.setattr(tvl1, "compute_tvl1_flow", counting)
    return calls


def _counts(summary: dict[str, int]) -> tuple[int, int, int]:
    """Videos done and failed, and failed batches, of a per-video stage's summary."""
    return summary["done"], summary["failed"], summary["failed_batches"]


def test_broken_video_is_recorded_and_the_rest_completes(prefect_server, data_root: Path, tmp_path: Path):
    broken = data_root / "source" / "videos" / "zz_broken.mp4"
    broken.write_bytes(b"this is not an mp4 file")
    config = _config(data_root, tmp_path / "run")
    ingest_flow(config)
    state = decode_flow(config, return_state=True)
    assert state.name == "Completed with failures" and state.message.startswith("decode: 1 videos failed")
    summary = state.result()
    assert summary == {
        "done": 15,
        "excluded": 0,
        "failed": 1,
        "computed": 15,
        "skipped": 0,
        "failed_batches": 1,
        "cached_batches": 0,
    }
    manifest = load_manifest(RunLayout.at(config.run_root)).set_index("video_id")
    failed = manifest[manifest["status_decode"] == "failed"]
    assert len(failed) == 1
    assert "zz_broken.mp4" in failed["error"].iloc[0]
    assert _counts(tvl1_flow(config)) == (15, 0, 0)


def test_a_short_video_is_excluded_with_its_reason_not_failed_nor_retried(
    prefect_server, data_root: Path, tmp_path: Path
):
    writer = cv2.VideoWriter(str(data_root / "source" / "videos" / "zz_short.avi"), MJPG, 25, (32, 32))
    for value in range(5):
        writer.write(np.full((32, 32, 3), 50 * value, np.uint8))
    writer.release()
    config = _config(data_root, tmp_path / "run")
    state = pipeline_flow(config, until="decode", return_state=True)
    assert state.name == "Completed", "an excluded video is not a failure"
    assert state.result()["decode"] == {
        "done": 15,
        "excluded": 1,
        "failed": 0,
        "computed": 15,
        "skipped": 0,
        "failed_batches": 0,
        "cached_batches": 0,
    }
    layout = RunLayout.at(config.run_root)
    manifest = load_manifest(layout).set_index("video_id")
    assert manifest.loc["source.zz_short", "status_decode"] == "excluded"
    assert pd.isna(manifest.loc["source.zz_short", "error"])
    reason = manifest.loc["source.zz_short", "exclusion"]
    assert (
        reason.startswith("decode: video file ")
        and "yields 5 frames, fewer than the 9 the run needs" in reason
    )
    recorded = layout.markers("decode").exclusion_record("source.zz_short")
    pipeline_flow(config, until="decode")
    assert layout.markers("decode").exclusion_record("source.zz_short") == recorded, "not decoded again"
    assert _counts(tvl1_flow(config)) == (15, 0, 0), "flow never sees the excluded video"

    longer = config.model_copy(update={"teacher": config.teacher.model_copy(update={"clip_length": 10})})
    with pytest.raises(DataProblems) as refused:
        decode_flow(longer)
    lines = str(refused.value).splitlines()
    assert "a video needs 11 frames: teacher clips span 10 frames" in lines[0]
    assert lines[1:] == [
        "- the target has no usable labelled train video: every method is fine-tuned on them",
        "- the target has no usable test video: there is nothing to evaluate on",
    ]


def test_the_run_stops_when_more_videos_fail_than_the_policy_allows(
    prefect_server, data_root: Path, tmp_path: Path
):
    (data_root / "source" / "videos" / "zz_broken.mp4").write_bytes(b"this is not an mp4 file")
    config = _config(data_root, tmp_path / "run")
    strict = config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"max_failed_fraction": 0.05})}
    )
    with pytest.raises(TooManyFailuresError) as stopped:
        pipeline_flow(strict, until="flow")
    message = str(stopped.value)
    assert message.startswith("decode: 1 of 16 videos failed (6.2 %), above runtime.max_failed_fraction 0.05")
    assert "source.zz_broken: decode:" in message and "zz_broken.mp4" in message
    assert len(RunLayout.at(config.run_root).markers("decode").committed_ids()) == 15, "committed work stays"

    lenient = config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"max_failed_fraction": 0.1})}
    )
    state = pipeline_flow(lenient, until="flow", return_state=True)
    assert state.name == "Completed with failures" and state.message.startswith("decode: 1 of 16 videos")
    results = state.result()
    assert results["decode"]["failed"] == 1 and _counts(results["flow"]) == (15, 0, 0)


def test_ingest_refuses_videos_that_cannot_serve_the_methods(prefect_server, data_root: Path, tmp_path: Path):
    config = _config(data_root, tmp_path / "run")
    config = config.model_copy(
        update={
            "methods": ("scratch", "idt_la", "supervised"),
            "data": config.data.model_copy(update={"source_heldout_labels": None}),
            "cluster": config.cluster.model_copy(update={"n_clusters": 50}),
        }
    )
    with pytest.raises(DataProblems) as refused:
        ingest_flow(config)
    lines = str(refused.value).splitlines()
    assert len(lines) == 3 and "cannot serve the run's methods" in lines[0]
    assert "supervised trains on the source's true labels" in lines[1]
    assert "n_clusters is 50, more than the 6 readable source videos" in lines[2]
    assert load_manifest(RunLayout.at(config.run_root))["in_source"].sum() == 6, "manifest kept"


def test_flow_stage_resumes_exactly_the_missing_videos(
    prefect_server, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    reference = _config(data_root, tmp_path / "reference")
    ingest_flow(reference)
    decode_flow(reference)
    tvl1_flow(reference)

    config = _config(data_root, tmp_path / "run")
    ingest_flow(config)
    decode_flow(config)
    n_videos = len(RunLayout.at(config.run_root).markers("decode").committed_ids())
    with monkeypatch.context() as patch:
        _count_flow_calls(patch, fail_after=5)
        first = tvl1_flow(config)
    assert first["done"] == 5
    assert first["failed"] == n_videos - 5

    calls = _count_flow_calls(monkeypatch)
    second = tvl1_flow(config)
    assert len(calls) == n_videos - 5
    assert _counts(second) == (n_videos, 0, 0)
    assert (second["computed"], second["skipped"]) == (n_videos - 5, 5)
    third = tvl1_flow(config)
    assert len(calls) == n_videos - 5, "a finished stage must not recompute anything"
    assert third["done"] == n_videos and third["cached_batches"] == -(-n_videos // 4)

    resumed, uninterrupted = (
        RunLayout.at(config.run_root).store("flow"),
        RunLayout.at(reference.run_root).store("flow"),
    )
    assert resumed.committed_ids() == uninterrupted.committed_ids()
    for video_id in uninterrupted.committed_ids():
        np.testing.assert_array_equal(resumed.read(video_id), uninterrupted.read(video_id))
    index = read_table(resumed.markers.index_url)
    assert set(index["video_id"]) == resumed.committed_ids(), "the stage's index lists every commit"
    assert resumed.markers.identities(index["video_id"]) == {
        video_id: resumed.markers.identity(video_id) for video_id in index["video_id"]
    }


def test_a_new_flow_code_version_misses_the_batch_cache_and_recomputes_only_the_flow(
    prefect_server, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    config = _config(data_root, tmp_path / "run")
    ingest_flow(config)
    decode_flow(config)
    tvl1_flow(config)
    layout = RunLayout.at(config.run_root)
    n_videos = len(layout.markers("flow").committed_ids())
    frames_commits = {
        video_id: layout.markers("decode").committed_info(video_id)["time"]
        for video_id in layout.markers("decode").committed_ids()
    }
    calls = _count_flow_calls(monkeypatch)
    monkeypatch.setattr(preprocess, "FLOW_CODE_VERSION", tvl1.CODE_VERSION + 1)
    monkeypatch.setattr(tvl1, "CODE_VERSION", tvl1.CODE_VERSION + 1)
    decode_flow(config)
    assert tvl1_flow(config)["done"] == n_videos
    assert len(calls) == n_videos, "every video's flow is recomputed under the new code version"
    assert {
        video_id: layout.markers("decode").committed_info(video_id)["time"] for video_id in frames_commits
    } == frames_commits, "the frames are not"


def test_the_next_run_recomputes_exactly_the_videos_verify_uncommitted(
    prefect_server, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    config = _config(data_root, tmp_path / "run")
    ingest_flow(config)
    decode_flow(config)
    tvl1_flow(config)
    layout = RunLayout.at(config.run_root)
    flow_store = layout.store("flow")
    damaged, unmarked, *_ = sorted(flow_store.committed_ids())
    (shard,) = [p for p in (Path(flow_store.url) / damaged / "c").rglob("*") if p.is_file()]
    shard.unlink()

    assert main(["verify", layout.root]) == 1
    printed = capsys.readouterr().out
    n_arrays = len(layout.store("frames").committed_ids()) + len(flow_store.committed_ids())
    assert f"flow.zarr/{damaged}: 1 of its 1 chunks are missing" in printed
    assert f"{n_arrays} committed arrays (frames.zarr, flow.zarr, idt.zarr) checked: 1 damaged" in printed
    assert main(["verify", layout.root, "--repair"]) == 0
    assert load_manifest(layout).set_index("video_id").loc[damaged, "status_flow"] == "failed"
    flow_store.markers.uncommit(unmarked)  # a commit marker deleted by hand

    calls = _count_flow_calls(monkeypatch)
    summary = tvl1_flow(config)
    assert len(calls) == 2, "the batch cache does not hide the two uncommitted videos; nothing else is redone"
    assert (summary["computed"], summary["failed"]) == (2, 0)
    assert main(["verify", layout.root]) == 0


def test_a_test_video_copied_into_the_source_is_refused_at_ingest(
    prefect_server, data_root: Path, tmp_path: Path
):
    test_list = next((data_root / "target" / "splits").glob("testlist*.txt")).read_text().split()
    leaked = data_root / "target" / "videos" / test_list[0]
    shutil.copy(leaked, data_root / "source" / "videos" / "renamed.avi")
    config = _config(data_root, tmp_path / "run")
    with pytest.raises(DataProblems) as refused:
        ingest_flow(config)
    message = str(refused.value)
    assert "leak between splits (refuse)" in message and "renamed.avi" in message and leaked.name in message
    warned = config.model_copy(update={"data": config.data.model_copy(update={"leaks": "warn"})})
    assert ingest_flow(warned)["videos"] == 16
