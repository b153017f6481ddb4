"""Cross-Model Pseudo-Labelling (Xu et al., CVPR 2022): a primary network and a lower-capacity auxiliary
network (1/4 of the channels) trained together on labelled and unlabelled videos.

Every iteration takes a batch of labelled videos (one weakly augmented clip each) and ``unlabelled_ratio``
times as many unlabelled videos (a weak and a strong view of one clip). Each network is trained with
cross-entropy on the labelled clips and, on the strong views of the unlabelled clips, with the pseudo-labels
its scheme derives from both networks' predictions on the weak views (``cross``: the other network's
confident predictions, tau 0.95), as in FixMatch (Sohn et al. 2020) with one forward pass per network over
all clips of the batch. The primary network is the stage's exported network. Where every unlabelled video
has a held-out label (diagnostics only, never a loss), each epoch reports the accuracy of each network's
pseudo-labels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from motionfit.models.cmpl import cmpl_pseudo_labels, masked_pseudo_label_loss
from motionfit.models.video_net import VideoNet, build_model
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import (
    MODALITY_CHANNELS,
    ClipDataset,
    clip_loader,
    labelled_videos,
    num_classes,
    unlabelled_videos,
    video_clip_keys,
)
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.loop import (
    EpochCallback,
    StepOutput,
    TrainingState,
    clip_transform,
    clips_as_batch,
    fit,
    last_metrics,
    make_lr_scheduler,
    make_optimizer,
    make_scaler,
    model_args,
    prepare_model,
    seed_everything,
    train_one_epoch,
    use_amp,
    validate,
)
from motionfit.tasks.training.pseudo_labels import heldout_label_index
from motionfit.tasks.training.students.motion_contrast import MotionContrast, load_motion_contrast
from motionfit.tasks.training.students.objective import STUDENT_KEY, student_modalities, video_keys

logger = logging.getLogger(__name__)

AUXILIARY_KEY = "auxiliary"


class PairedBatches:
    """Iterates a labelled and an unlabelled loader in step, yielding one dict per iteration with the keys of
    the labelled batch prefixed ``labelled_`` and those of the unlabelled batch ``unlabelled_``; its length
    is the shorter loader's."""

    def __init__(self, labelled: Any, unlabelled: Any) -> None:
        self.labelled = labelled
        self.unlabelled = unlabelled

    def __len__(self) -> int:
        return min(len(self.labelled), len(self.unlabelled))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for labelled, unlabelled in zip(self.labelled, self.unlabelled, strict=False):
            yield {
                **{f"labelled_{k}": v for k, v in labelled.items()},
                **{f"unlabelled_{k}": v for k, v in unlabelled.items()},
            }


def cmpl_step(
    primary: VideoNet,
    auxiliary: VideoNet,
    batch: dict[str, Any],
    scheme: str,
    threshold: float,
    unlabelled_weight: float,
    channels_last: bool = False,
    contrast: MotionContrast | None = None,
    contrast_weight: float = 0.0,
) -> StepOutput:
    """One CMPL training step on a paired batch (see :class:`PairedBatches`): labelled ``labelled_rgb``
    ``[B, 1, 3, T, S, S]`` with ``labelled_label`` ``[B]``; unlabelled weak ``unlabelled_rgb`` and strong
    ``unlabelled_rgb_strong`` ``[U, 1, 3, T, S, S]`` (and ``unlabelled_flow`` for the optional LMCL term of
    the primary network). Returns the total loss and, per network, the supervised and unlabelled losses and
    the percentage of unlabelled clips whose pseudo-label passed the scheme's mask; with the source's held-out
    labels in ``unlabelled_label`` (all known, diagnostics only), each network's pseudo-label accuracy."""
    labelled = clips_as_batch(batch["labelled_rgb"], channels_last)
    weak = clips_as_batch(batch["unlabelled_rgb"], channels_last)
    strong = clips_as_batch(batch["unlabelled_rgb_strong"], channels_last)
    labels = batch["labelled_label"]
    n_labelled, n_unlabelled = labelled.shape[0], weak.shape[0]
    inputs = torch.cat([labelled, weak, strong])
    primary_map = primary.feature_map(inputs)
    logits = {"primary": primary.classify(primary_map).float(), "auxiliary": auxiliary(inputs).float()}
    parts = {name: value.split([n_labelled, n_unlabelled, n_unlabelled]) for name, value in logits.items()}
    probabilities = {name: torch.softmax(part[1].detach(), dim=1) for name, part in parts.items()}
    heldout = batch.get("unlabelled_label")
    loss = torch.zeros((), device=inputs.device)
    metrics: dict[str, Any] = {}
    for name, other in (("primary", "auxiliary"), ("auxiliary", "primary")):
        labelled_logits, _, strong_logits = parts[name]
        pseudo_labels, mask = cmpl_pseudo_labels(scheme, probabilities[name], probabilities[other], threshold)
        supervised = F.cross_entropy(labelled_logits, labels)
        unsupervised = masked_pseudo_label_loss(strong_logits, pseudo_labels, mask)
        loss = loss + supervised + unlabelled_weight * unsupervised
        metrics.update(
            {
                f"{name}_supervised_loss": supervised.detach(),
                f"{name}_unlabelled_loss": unsupervised.detach(),
                f"{name}_mask_rate": 100.0 * mask.float().mean(),
            }
        )
        if heldout is not None and bool((heldout >= 0).all()):  # diagnostics: the source's held-out labels
            metrics[f"{name}_pseudo_label_top1"] = 100.0 * (pseudo_labels == heldout).float().mean()
    if contrast is not None and contrast_weight > 0:
        weak_map = primary_map[n_labelled : n_labelled + n_unlabelled]
        motion_loss, motion_metrics = contrast.loss(
            weak_map, clips_as_batch(batch["unlabelled_flow"], channels_last)
        )
        metrics.update(motion_metrics)
        loss = loss + contrast_weight * motion_loss
    return StepOutput(loss, metrics, n_clips=inputs.shape[0])


def _video_dataset(
    layout: RunLayout,
    keys: pd.DataFrame,
    modalities: tuple[str, ...],
    config: StudentConfig,
    strong_view: bool,
    labels: dict[str, int] | None = None,
) -> ClipDataset:
    transform = clip_transform(config, strong_view=strong_view)
    return ClipDataset(
        layout,
        keys,
        modalities,
        config.clip_length,
        transform,
        frame_stride=config.frame_stride,
        by_video=True,
        jitter_segments=config.clips_per_video,
        labels=labels,
        seed=config.seed,
    )


def train_cmpl(
    layout: RunLayout,
    manifest: pd.DataFrame,
    config: StudentConfig,
    device: torch.device,
    on_epoch_end: EpochCallback | None = None,
    stage: str = "student",
    data_key: str | None = None,
) -> dict[str, Any]:
    """CMPL training of the primary (exported as the stage's network) and auxiliary networks; an epoch is one
    pass over the unlabelled videos. Returns the student summary plus ``<eval_split>_video_top1`` of the
    primary network when the target has that split."""
    amp = use_amp(config, device)
    labelled = labelled_videos(manifest, "train")
    if labelled.empty:
        raise ValueError("CMPL needs labelled target train videos; the manifest has none")
    n_classes = num_classes(manifest)
    seed_everything(config.seed)
    args = model_args(config, MODALITY_CHANNELS["rgb"], n_classes)
    primary = prepare_model(build_model(**args), device, amp)
    auxiliary_args = {**args, "width_multiplier": config.width_multiplier * config.auxiliary_width}
    auxiliary = prepare_model(build_model(**auxiliary_args), device, amp)
    modules: dict[str, nn.Module] = {STUDENT_KEY: primary, AUXILIARY_KEY: auxiliary}
    contrast = None
    if config.lmcl_weight > 0:
        contrast, modules["lmcl_heads"] = load_motion_contrast(layout, primary, config, device)
    model = nn.ModuleDict(modules)

    labelled_set = _video_dataset(
        layout,
        video_clip_keys(
            layout,
            labelled["video_id"],
            ("rgb",),
            config.clip_length,
            config.clips_per_video,
            config.frame_stride,
        ),
        ("rgb",),
        config,
        strong_view=False,
        labels=dict(zip(labelled["video_id"], labelled["label_index"], strict=True)),
    )
    unlabelled = unlabelled_videos(manifest)
    heldout = heldout_label_index(manifest)
    unlabelled_set = _video_dataset(
        layout,
        video_keys(layout, unlabelled, config),
        student_modalities(config),
        config,
        strong_view=True,
        labels=heldout.to_dict() if set(unlabelled) <= set(heldout.index) else None,
    )
    unlabelled_batch = config.batch_size * config.unlabelled_ratio
    iterations = max(len(unlabelled_set) // unlabelled_batch, 1)
    labelled_loader = clip_loader(  # as many labelled batches as unlabelled ones, in every epoch
        labelled_set,
        config.batch_size,
        device,
        shuffle=True,
        num_workers=config.num_workers,
        seed=config.seed,
        num_samples=iterations * config.batch_size,
    )
    unlabelled_loader = clip_loader(
        unlabelled_set,
        unlabelled_batch,
        device,
        shuffle=True,
        num_workers=config.num_workers,
        seed=config.seed + 1,
    )
    loaders = PairedBatches(labelled_loader, unlabelled_loader)
    eval_videos = labelled_videos(manifest, config.eval_split)
    eval_loader = None
    if len(eval_videos):
        eval_keys = video_clip_keys(
            layout, eval_videos["video_id"], ("rgb",), config.clip_length, 1, config.frame_stride
        )
        eval_set = ClipDataset(
            layout,
            eval_keys,
            ("rgb",),
            config.clip_length,
            clip_transform(config, train=False),
            frame_stride=config.frame_stride,
            labels=dict(zip(eval_videos["video_id"], eval_videos["label_index"], strict=True)),
        )
        eval_loader = clip_loader(eval_set, unlabelled_batch, device, shuffle=False)

    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_lr_scheduler(optimizer, len(loaders), config)
    scaler = make_scaler(config, device)
    state = TrainingState(model, optimizer, scheduler, scaler, args, network_prefix=f"{STUDENT_KEY}.")

    def step(batch: dict[str, Any]) -> StepOutput:
        return cmpl_step(
            primary,
            auxiliary,
            batch,
            config.cmpl_scheme,
            config.cmpl_threshold,
            config.unlabelled_weight,
            amp,
            contrast,
            config.lmcl_weight,
        )

    def run_epoch(epoch: int) -> dict[str, Any]:
        labelled_loader.set_epoch(epoch)
        unlabelled_loader.set_epoch(epoch)
        metrics = train_one_epoch(
            model, step, optimizer, scheduler, loaders, device, epoch, scaler, amp=amp, channels_last=amp
        )
        if eval_loader is not None:
            scores = validate(primary, eval_loader, device, "rgb", amp, amp)
            metrics.update({f"{config.eval_split}_{name}": value for name, value in scores.items()})
        return metrics

    history = fit(layout, stage, config, state, run_epoch, on_epoch_end, data_key)
    final = last_metrics(history)
    summary = {
        "stage": stage,
        "checkpoint": layout.checkpoint(stage),
        "objective": "cmpl",
        "epochs": len(history),
        "n_items": len(unlabelled_set),
        "n_labelled": len(labelled_set),
        "train_loss": final.get("loss"),
        "motion_sampling": config.motion_sampling,
        "lmcl_weight": config.lmcl_weight,
    }
    summary.update({k: v for k, v in final.items() if k.startswith(f"{config.eval_split}_")})
    logger.info("CMPL trained: %s", summary)
    return summary
