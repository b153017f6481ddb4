"""Data-parallel training: two gloo processes on the CPU train what one process does with the same global
batch (loss curve and weights), and resume from a checkpoint of another number of processes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import write_moving_squares

from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import EpochSampler, RankBatchSampler
from motionfit.tasks.training.config import TeacherConfig
from motionfit.tasks.training.launch import train_in_processes
from motionfit.tasks.training.loop import EpochCallback, load_checkpoint
from motionfit.tasks.training.teacher import train_teacher

CONFIG = TeacherConfig(
    arch="r2plus1d_18",
    width_multiplier=1 / 8,
    layers=(1, 1, 1, 1),
    clip_length=4,
    crop_size=24,
    clips_per_video=2,
    epochs=3,
    batch_size=4,
    lr=0.01,  # a larger step on 8 clips a batch turns float rounding into visibly different curves
    warmup_epochs=1,
    dropout=0.0,  # dropout masks are drawn per process
    num_workers=0,
    seed=2,
)


class Interrupted(Exception):
    pass


def _interrupt_after(epoch: int) -> EpochCallback:
    def on_epoch_end(metrics: dict[str, Any]) -> None:
        if metrics["epoch"] == epoch:
            raise Interrupted

    return on_epoch_end


def train_and_resume(
    device: torch.device, on_epoch_end: EpochCallback | None, layout: RunLayout, manifest: pd.DataFrame
) -> dict[str, Any]:
    """The two-process part of the test, in one launch: stage ``ddp`` from scratch, then stage ``resumed``
    from the checkpoint one process left."""
    trained = train_teacher(layout, manifest, CONFIG, device, on_epoch_end, stage="ddp")
    return {"ddp": trained, "resumed": train_teacher(layout, manifest, CONFIG, device, stage="resumed")}


def _assert_same_weights(first: str, second: str) -> float:
    a, b = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
    return max(float((a[name].double() - b[name].double()).abs().max()) for name in a)


def test_rank_batches_split_each_global_batch_in_order() -> None:
    sampler = EpochSampler(10, seed=1)
    whole = list(RankBatchSampler(sampler, 4, drop_last=True))
    shares = [list(RankBatchSampler(sampler, 4, drop_last=True, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shares[0]) == len(whole) == 2
    assert [a + b for a, b in zip(*shares, strict=True)] == whole
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        RankBatchSampler(sampler, 4, drop_last=True, rank=0, world_size=3)
    with pytest.raises(ValueError, match="the last of 3"):
        RankBatchSampler(EpochSampler(3), 4, drop_last=False, rank=0, world_size=2)


def test_two_processes_train_like_one_and_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.set_num_threads(1)
    layout, manifest = write_moving_squares(tmp_path, n_train=2, n_test=0, n_source=0, n_frames=8, size=32)
    single = train_teacher(layout, manifest, CONFIG, "cpu", stage="single")
    with pytest.raises(Interrupted):
        train_teacher(layout, manifest, CONFIG, "cpu", _interrupt_after(0), stage="resumed")

    published: list[dict[str, Any]] = []
    with caplog.at_level(logging.INFO, logger="motionfit"):
        results = train_in_processes(
            train_and_resume, 2, "cpu", published.append, layout=layout, manifest=manifest
        )

    assert [m["epoch"] for m in published] == [0, 1, 2]  # rank 0's epoch rows and logs reach the caller
    assert "resumed: resuming after epoch 1 of 3" in caplog.text
    one = read_table(layout.history("single"))
    for stage in ("ddp", "resumed"):
        history = read_table(layout.history(stage))
        assert (history["steps"] == 2).all()  # 8 videos in global batches of 4
        for metric in ("loss", "train_video_top1", "lr"):
            np.testing.assert_allclose(history[metric], one[metric], rtol=1e-4, err_msg=f"{stage} {metric}")
        _assert_same_weights(single["checkpoint"], results[stage]["checkpoint"])
    assert load_checkpoint(results["resumed"]["checkpoint"])["epoch"] == 2
