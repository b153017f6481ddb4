"""The RGB students: self-training on motion knowledge, without flow at inference.

:func:`train_student` dispatches on ``StudentConfig.objective`` through :data:`OBJECTIVES`, one module each:

- ``pseudo_labels``: MotionFit's clip-level pseudo-labels (:mod:`.pseudo_labels`);
- ``local_aggregation``: Video Local Aggregation with the IDT prior (:mod:`.local_aggregation`);
- ``cmpl``: CMPL's cross-model pseudo-labelling of a primary and an auxiliary network (:mod:`.cmpl`);
- ``mers``, ``mars``: regression of the frozen flow teacher's features on the labelled target, alone or
  beside cross-entropy (:mod:`.feature_regression`).

MSCL options (Ni et al. 2022) for every objective: motion differential sampling (train on the more dynamic
half of each video's clips, :mod:`motionfit.tasks.motion.sampling`) and the local motion contrastive loss
between the student's per-time-step features and the frozen flow teacher's (:mod:`.motion_contrast`), added
with a weight.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
from torch import nn

from motionfit.models.video_net import VideoNet
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import ClipDataset, clip_loader
from motionfit.tasks.training import distributed
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.loop import (
    EpochCallback,
    StepOutput,
    TrainingState,
    clips_as_batch,
    fit,
    last_metrics,
    make_lr_scheduler,
    make_optimizer,
    make_scaler,
    prepare_model,
    resolve_device,
    seed_everything,
    train_one_epoch,
    use_amp,
)
from motionfit.tasks.training.students import feature_regression, local_aggregation, pseudo_labels
from motionfit.tasks.training.students.cmpl import train_cmpl
from motionfit.tasks.training.students.motion_contrast import load_motion_contrast
from motionfit.tasks.training.students.objective import STUDENT_KEY, ObjectiveSetupFn

logger = logging.getLogger(__name__)

CODE_VERSION = 1
"""Version of the student training (every objective), part of the stage's cache key and of the data key a
checkpoint resumes on: bump it when a change alters what a student learns, and the next run retrains the
students and what starts from them."""

STUDENT_STAGE = "student"

StudentTrainer = Callable[..., dict[str, Any]]
"""``(layout, manifest, config, device, on_epoch_end, stage, data_key) -> summary`` of one objective."""


def train_student(
    layout: RunLayout,
    manifest: pd.DataFrame,
    config: StudentConfig,
    device: str | torch.device | None = None,
    on_epoch_end: EpochCallback | None = None,
    stage: str = STUDENT_STAGE,
    data_key: str | None = None,
) -> dict[str, Any]:
    """Train the RGB student with ``config.objective``; resumable (see :func:`fit`). The exported network
    (``load_network(checkpoint)``) is the student; ``finetune`` starts from it.

    Returns ``{stage, checkpoint, objective, epochs, n_items, train_loss, motion_sampling, lmcl_weight}``
    (plus the validation scores of CMPL).
    """
    device = resolve_device(device)
    train = OBJECTIVES.get(config.objective)
    if train is None:
        raise ValueError(f"unknown student objective {config.objective!r}; known: {sorted(OBJECTIVES)}")
    if distributed.world_size() > 1 and config.objective not in DATA_PARALLEL_OBJECTIVES:
        raise ValueError(
            f"student objective {config.objective!r} trains in one process (its memory bank or second "
            f"network is not shared across ranks); data-parallel ones: {sorted(DATA_PARALLEL_OBJECTIVES)}"
        )
    return train(layout, manifest, config, device, on_epoch_end, stage, data_key)


def train_single_network(
    objective: ObjectiveSetupFn,
    layout: RunLayout,
    manifest: pd.DataFrame,
    config: StudentConfig,
    device: torch.device,
    on_epoch_end: EpochCallback | None = None,
    stage: str = STUDENT_STAGE,
    data_key: str | None = None,
) -> dict[str, Any]:
    """The loop of the objectives that train one RGB network: ``objective`` builds the network, data set and
    step loss (:class:`ObjectiveSetup`); LMCL is added to the loss when ``config.lmcl_weight`` > 0."""
    amp = use_amp(config, device)
    seed_everything(config.seed)
    setup = objective(layout, manifest, config, device)
    network: VideoNet = prepare_model(setup.network, device, amp)
    modules: dict[str, nn.Module] = {STUDENT_KEY: network, **setup.extra}
    contrast = None
    if config.lmcl_weight > 0:
        contrast, modules["lmcl_heads"] = load_motion_contrast(layout, network, config, device)
    model = nn.ModuleDict(modules).to(device)
    if setup.prepare is not None:
        setup.prepare()
    dataset: ClipDataset = setup.dataset
    loader = clip_loader(
        dataset, config.batch_size, device, shuffle=True, num_workers=config.num_workers, seed=config.seed
    )
    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_lr_scheduler(optimizer, len(loader), config)
    scaler = make_scaler(config, device)
    state = TrainingState(model, optimizer, scheduler, scaler, setup.args, network_prefix=f"{STUDENT_KEY}.")
    loss_fn = setup.loss_fn
    current_epoch = [0]

    def step(batch: dict[str, Any]) -> StepOutput:
        clips = clips_as_batch(batch["rgb"], amp)
        feature_map = network.feature_map(clips)
        loss, metrics, after_update = loss_fn(batch, feature_map, current_epoch[0])
        if contrast is not None:
            motion_loss, motion_metrics = contrast.loss(feature_map, clips_as_batch(batch["flow"], amp))
            metrics = {**metrics, "objective_loss": loss.detach(), **motion_metrics}
            loss = loss + config.lmcl_weight * motion_loss
        return StepOutput(loss, metrics, n_clips=clips.shape[0], after_update=after_update)

    train_step = distributed.data_parallel(model, step, device)

    def run_epoch(epoch: int) -> dict[str, Any]:
        current_epoch[0] = epoch
        loader.set_epoch(epoch)
        metrics = train_one_epoch(
            model, train_step, optimizer, scheduler, loader, device, epoch, scaler, amp=amp, channels_last=amp
        )
        if setup.epoch_health is not None:
            metrics.update(setup.epoch_health(epoch, metrics))
        return metrics

    history = fit(layout, stage, config, state, run_epoch, on_epoch_end, data_key)
    summary = {
        "stage": stage,
        "checkpoint": layout.checkpoint(stage),
        "objective": config.objective,
        "epochs": len(history),
        "n_items": len(dataset),
        "train_loss": last_metrics(history).get("loss"),
        "motion_sampling": config.motion_sampling,
        "lmcl_weight": config.lmcl_weight,
    }
    logger.info("student trained: %s", summary)
    return summary


OBJECTIVES: dict[str, StudentTrainer] = {
    "pseudo_labels": functools.partial(train_single_network, pseudo_labels.setup),
    "local_aggregation": functools.partial(train_single_network, local_aggregation.setup),
    "instance_recognition": functools.partial(
        train_single_network, local_aggregation.instance_recognition_setup
    ),
    "video_local_aggregation": functools.partial(train_single_network, local_aggregation.video_setup),
    "cmpl": train_cmpl,
    "mers": functools.partial(train_single_network, feature_regression.setup),
    "mars": functools.partial(train_single_network, feature_regression.setup),
}
"""The student objectives by ``StudentConfig.objective``."""

DATA_PARALLEL_OBJECTIVES = frozenset({"pseudo_labels", "mers", "mars"})
"""The objectives that train on several processes (``runtime.train_processes``): the others update a memory
bank, or pseudo-label with a second network, within one process (the frozen teacher of MERS and MARS is
each rank's own copy)."""
