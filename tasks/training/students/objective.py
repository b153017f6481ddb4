"""What every student objective shares: the exported network's name in the trained module, the setup an
objective hands the training loop, the frozen flow teacher (LMCL, MERS, MARS) and the clips a student trains
on (MSCL's motion differential sampling, the aligned flow clips of LMCL, MERS and MARS)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from motionfit.models.video_net import VideoNet
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import ClipDataset, video_clip_keys
from motionfit.tasks.motion.sampling import motion_differential_keys
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.loop import load_network

STUDENT_KEY = "student"
"""Name of the exported network inside the trained module (checkpoint prefix ``student.``)."""

FLOW_PAIRED_OBJECTIVES = frozenset({"mers", "mars"})
"""The objectives whose loss reads the teacher on the flow clip paired with each RGB clip."""

LossFn = Callable[[dict[str, Any], Tensor, int], tuple[Tensor, dict[str, Any], Callable[[], None] | None]]
"""``loss_fn(batch, feature_map, epoch) -> (loss, metrics, after_update)`` of one training step; the feature
map is the student's on ``batch["rgb"]``, ``after_update`` runs after the optimiser step (or is None)."""


@dataclass
class ObjectiveSetup:
    """What an objective builds for the shared student loop: the ``network`` to export with its
    ``build_model`` ``args``, the training ``dataset``, the step's ``loss_fn``, ``extra`` modules saved in
    the checkpoint beside the network (a memory bank), ``prepare`` run once before training (a resumed
    checkpoint then overwrites what it set), and ``epoch_health(epoch, metrics)`` adding diagnostics to each
    epoch's metrics."""

    network: VideoNet
    args: dict[str, Any]
    dataset: ClipDataset
    loss_fn: LossFn
    extra: dict[str, nn.Module] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    epoch_health: Callable[[int, dict[str, Any]], dict[str, float]] | None = None


ObjectiveSetupFn = Callable[[RunLayout, pd.DataFrame, StudentConfig, Any], ObjectiveSetup]


def training_keys(layout: RunLayout, keys: pd.DataFrame, config: StudentConfig) -> pd.DataFrame:
    """``keys`` restricted to the more dynamic half of each video when motion sampling is on."""
    if not config.motion_sampling:
        return keys
    return motion_differential_keys(layout, keys, config.clip_length, config.frame_stride)


def student_modalities(config: StudentConfig) -> tuple[str, ...]:
    """RGB, plus the aligned flow clips when LMCL is on or the objective regresses the teacher's features."""
    paired = config.lmcl_weight > 0 or config.objective in FLOW_PAIRED_OBJECTIVES
    return ("rgb", "flow") if paired else ("rgb",)


def frozen_teacher(layout: RunLayout, config: StudentConfig, device: torch.device) -> VideoNet:
    """The flow teacher of ``config.teacher_stage`` in eval mode and without gradients; kept out of the
    trained module, it is neither updated, switched to training mode, nor saved with the student."""
    url = layout.checkpoint(config.teacher_stage)
    teacher, checkpoint = load_network(url, device)
    if checkpoint["network_args"]["in_channels"] != 2:
        raise ValueError(f"LMCL, MERS and MARS regress a flow teacher's features; {url} sees RGB frames")
    return teacher.requires_grad_(False)


def video_keys(layout: RunLayout, video_ids: list[str], config: StudentConfig) -> pd.DataFrame:
    """``clips_per_video`` keys of every video readable in the student's modalities (MDS applied)."""
    keys = video_clip_keys(
        layout,
        video_ids,
        student_modalities(config),
        config.clip_length,
        config.clips_per_video,
        config.frame_stride,
    )
    return training_keys(layout, keys, config)
