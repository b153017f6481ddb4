"""The motion teacher of MotionFit (M_MPLG): a 3D CNN trained on the optical flow of the labelled target
videos (D_MPLG) with the multi-clip loss.

Every training item is a video: R clips around R evenly spaced start frames (temporal jitter within each
clip's segment), each augmented on its own; the network's logits are averaged over the R clips and the
average is scored by cross-entropy against the video's label (Gavrilyuk et al. 2021, Sec. 3.1). Validation,
when the target has a ``val`` split, reports the clip and video top-1 of centre clips.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch

from motionfit.models.losses import multi_clip_cross_entropy
from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import (
    MODALITY_CHANNELS,
    ClipDataset,
    ClipLoader,
    clip_loader,
    labelled_videos,
    num_classes,
    video_clip_keys,
)
from motionfit.tasks.methods import TEACHER_STAGE
from motionfit.tasks.training import distributed
from motionfit.tasks.training.config import TeacherConfig
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
    resolve_device,
    seed_everything,
    train_one_epoch,
    use_amp,
    validate,
)

logger = logging.getLogger(__name__)

CODE_VERSION = 1
"""The stage's code version: bump it when its output changes (see :mod:`motionfit.tasks.per_video`)."""


def _loader(
    layout: RunLayout,
    videos: pd.DataFrame,
    config: TeacherConfig,
    device: torch.device,
    train: bool,
) -> ClipLoader:
    """Training: videos of R clips around R evenly spaced starts; validation: centre clips."""
    clips = config.clips_per_video if train else config.eval_clips_per_video
    video_ids = videos["video_id"]
    keys = video_clip_keys(
        layout, video_ids, (config.modality,), config.clip_length, clips, config.frame_stride
    )
    dataset = ClipDataset(
        layout,
        keys,
        (config.modality,),
        config.clip_length,
        clip_transform(config, train),
        frame_stride=config.frame_stride,
        by_video=train,
        clips_per_item=clips if train else 1,
        jitter_segments=clips if train else 0,
        labels=dict(zip(videos["video_id"], videos["label_index"], strict=True)),
        seed=config.seed,
    )
    batch_size = config.batch_size if train else config.batch_size * config.clips_per_video
    return clip_loader(
        dataset, batch_size, device, shuffle=train, num_workers=config.num_workers, seed=config.seed
    )


def train_teacher(
    layout: RunLayout,
    manifest: pd.DataFrame,
    config: TeacherConfig,
    device: str | torch.device | None = None,
    on_epoch_end: EpochCallback | None = None,
    stage: str = TEACHER_STAGE,
    data_key: str | None = None,
) -> dict[str, Any]:
    """Train the flow teacher on the target's labelled train split; resumable (see :func:`fit`).

    Returns ``{stage, checkpoint, epochs, n_videos, num_classes, train_loss, <eval_split>_video_top1, ...}``.
    """
    device = resolve_device(device)
    amp = use_amp(config, device)
    train_videos = labelled_videos(manifest, "train")
    if train_videos.empty:
        raise ValueError("manifest has no labelled target train videos to train the teacher on")
    n_classes = num_classes(manifest)
    seed_everything(config.seed)
    args = model_args(config, MODALITY_CHANNELS[config.modality], n_classes)
    model = prepare_model(build_model(**args), device, amp)
    train_loader = _loader(layout, train_videos, config, device, train=True)
    eval_videos = labelled_videos(manifest, config.eval_split)
    eval_loader = _loader(layout, eval_videos, config, device, train=False) if len(eval_videos) else None
    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_lr_scheduler(optimizer, len(train_loader), config)
    scaler = make_scaler(config, device)
    state = TrainingState(model, optimizer, scheduler, scaler, network_args=args)

    def step(batch: dict[str, Any]) -> StepOutput:
        clips = batch[config.modality]  # [B, R, C, T, H, W]
        logits = model(clips_as_batch(clips, amp)).view(clips.shape[0], clips.shape[1], -1)
        loss = multi_clip_cross_entropy(logits.float(), batch["label"])
        accuracy = 100.0 * (logits.mean(dim=1).argmax(dim=1) == batch["label"]).float().mean()
        return StepOutput(loss, {"train_video_top1": accuracy}, n_clips=clips.shape[0] * clips.shape[1])

    train_step = distributed.data_parallel(model, step, device)

    def run_epoch(epoch: int) -> dict[str, Any]:
        train_loader.set_epoch(epoch)
        metrics = train_one_epoch(
            model,
            train_step,
            optimizer,
            scheduler,
            train_loader,
            device,
            epoch,
            scaler,
            amp=amp,
            channels_last=amp,
        )
        if eval_loader is not None:
            scores = validate(model, eval_loader, device, config.modality, amp, channels_last=amp)
            metrics.update({f"{config.eval_split}_{name}": value for name, value in scores.items()})
        return metrics

    history = fit(layout, stage, config, state, run_epoch, on_epoch_end, data_key)
    final = last_metrics(history)
    summary = {
        "stage": stage,
        "checkpoint": layout.checkpoint(stage),
        "epochs": len(history),
        "n_videos": len(train_loader.dataset),
        "num_classes": n_classes,
        "train_loss": final.get("loss"),
    }
    summary.update({k: v for k, v in final.items() if k.startswith(f"{config.eval_split}_")})
    logger.info("teacher trained: %s", summary)
    return summary
