"""Ingest, decode and TV-L1 flow as Prefect flows: failures are isolated and re-runs resume exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from motionfit.config import PipelineConfig
from motionfit.flows.preprocess import decode_flow, ingest_flow, optical_flow_flow
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import load_manifest
from motionfit.tasks.data.ingest import synthetic_data_config
from motionfit.tasks.motion import tvl1 as optical_flow

pytestmark = pytest.mark.slow


def _config(data_root: Path, run_root: Path) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "run_root": str(run_root),
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
    original = optical_flow.compute_tvl1_flow

    def counting(frames, config):
        calls.append(1)
        if fail_after is not None and len(calls) > fail_after:
            raise RuntimeError("simulated worker crash")
        return original(frames, config)

    monkeypatch.setattr(optical_flow, "compute_tvl1_flow", counting)
    return calls


def test_broken_video_is_recorded_and_the_rest_completes(prefect_server, data_root: Path, tmp_path: Path):
    broken = data_root / "source" / "videos" / "zz_broken.mp4"
    broken.write_bytes(b"this is not an mp4 file")
    config = _config(data_root, tmp_path / "run")
    ingest_flow(config)
    summary = decode_flow(config)
    assert summary == {"done": 15, "failed": 1, "failed_batches": 1}
    manifest = load_manifest(RunLayout.at(config.run_root)).set_index("video_id")
    failed = manifest[manifest["status_decode"] == "failed"]
    assert len(failed) == 1
    assert "zz_broken.mp4" in failed["error"].iloc[0]
    assert optical_flow_flow(config) == {"done": 15, "failed": 0, "failed_batches": 0}


def test_flow_stage_resumes_exactly_the_missing_videos(
    prefect_server, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    reference = _config(data_root, tmp_path / "reference")
    ingest_flow(reference)
    decode_flow(reference)
    optical_flow_flow(reference)

    config = _config(data_root, tmp_path / "run")
    ingest_flow(config)
    decode_flow(config)
    n_videos = len(RunLayout.at(config.run_root).markers("decode").committed_ids())
    with monkeypatch.context() as patch:
        _count_flow_calls(patch, fail_after=5)
        first = optical_flow_flow(config)
    assert first["done"] == 5
    assert first["failed"] == n_videos - 5

    calls = _count_flow_calls(monkeypatch)
    second = optical_flow_flow(config)
    assert len(calls) == n_videos - 5
    assert second == {"done": n_videos, "failed": 0, "failed_batches": 0}
    third = optical_flow_flow(config)
    assert len(calls) == n_videos - 5, "a finished stage must not recompute anything"
    assert third["done"] == n_videos

    resumed, uninterrupted = (
        RunLayout.at(config.run_root).store("flow"),
        RunLayout.at(reference.run_root).store("flow"),
    )
    assert resumed.committed_ids() == uninterrupted.committed_ids()
    for video_id in uninterrupted.committed_ids():
        np.testing.assert_array_equal(resumed.read(video_id), uninterrupted.read(video_id))
