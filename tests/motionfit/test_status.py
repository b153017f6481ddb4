"""``motionfit status``: training stages show the epochs they finished of those the run's config plans; every
missing, failed and excluded video is listed with its reason."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from motionfit.config import load_config
from motionfit.flows.pipeline import save_run_config
from motionfit.status import render_status, run_outputs
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import refresh_stage_status, save_manifest


def test_training_stages_show_finished_of_planned_epochs(tmp_path: Path) -> None:
    config = load_config(preset="tiny", overrides={"run_root": str(tmp_path), "teacher": {"epochs": 5}})
    save_run_config(config)
    layout = RunLayout.at(tmp_path)
    for stage, finished in (("teacher", 3), ("finetune_scratch", 0)):
        Path(layout.checkpoints(stage)).mkdir(parents=True)
        if finished:
            pd.DataFrame({"epoch": range(finished), "loss": 1.0}).to_parquet(layout.history(stage))
    states = dict(zip(run_outputs(layout)["stage"], run_outputs(layout)["state"], strict=True))
    assert states["train:teacher"] == "epoch 3/5"
    assert states["train:finetune_scratch"] == f"epoch 0/{config.finetune.epochs}"


def test_status_lists_excluded_and_failed_videos_with_their_reasons(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    ids = [f"v{i:02d}" for i in range(30)]
    manifest = pd.DataFrame(
        {"video_id": ids, "dataset": "target", "split": "train", "status": "ok", "error": None}
    )
    markers = layout.markers("decode")
    for video_id in ids[:25]:
        markers.exclude(video_id, f"video file {video_id}.avi is 16x12 px, smaller than decode.min_side 32")
    markers.fail("v29", "VideoDecodeError: video file v29.avi is empty (0 bytes)")
    save_manifest(layout, refresh_stage_status(manifest, markers, ids))
    status = render_status(str(tmp_path))
    assert "missing, failed and excluded videos (26):" in status
    assert "v24" in status and "decode: video file v24.avi is 16x12 px" in status, "all of them, unbounded"
    assert "decode: VideoDecodeError: video file v29.avi is empty" in status
    live = status.split("per-video stages now (commit markers):")[1].splitlines()[2].split()
    assert live == ["decode", "0", "25", "1", "4"]
