"""Fine-tuning on the labelled target (D_target) and video-level prediction.

MotionFit fine-tunes the self-trained RGB student on the target with SGD (lr 0.1, momentum 0.9), keeping its
earliest blocks frozen (block 1 for UCF101, blocks 1-2 for HMDB51), and tests on 5 clips per video whose
softmax scores are averaged. Without an initial checkpoint the same recipe trains from scratch (the
baseline; nothing is frozen then), and with ``modality="flow"`` it gives the flow baseline. Several methods
coexist in one run under distinct stage names (``finetune_motionfit``, ``finetune_scratch``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from motionfit.models.video_net import VideoNet, build_model, freeze_blocks
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import write_table
from motionfit.tasks.data.clips import (
    MODALITY_CHANNELS,
    ClipDataset,
    clip_loader,
    labelled_videos,
    num_classes,
    video_clip_keys,
)
from motionfit.tasks.data.transforms import ClipTransform
from motionfit.tasks.training import distributed
from motionfit.tasks.training.config import FinetuneConfig
from motionfit.tasks.training.loop import (
    EpochCallback,
    StepOutput,
    TrainingState,
    clip_transform,
    clips_as_batch,
    fit,
    last_metrics,
    load_checkpoint,
    make_lr_scheduler,
    make_optimizer,
    make_scaler,
    model_args,
    network_state,
    predict_clips,
    prepare_model,
    resolve_device,
    seed_everything,
    train_one_epoch,
    use_amp,
    video_outputs,
)

logger = logging.getLogger(__name__)

CODE_VERSION = 1
"""The stage's code version: bump it when its output changes (see :mod:`motionfit.tasks.per_video`)."""


def _initial_network(
    config: FinetuneConfig, init_checkpoint: str | None, in_channels: int, n_classes: int
) -> tuple[VideoNet, dict[str, Any]]:
    """The network to fine-tune and its ``build_model`` arguments: the checkpoint's backbone with a new
    classifier, or a fresh network of ``config``'s architecture."""
    if init_checkpoint is None:
        args = model_args(config, in_channels, n_classes)
        return build_model(**args), args
    checkpoint = load_checkpoint(init_checkpoint)
    source = checkpoint["network_args"]
    if source["in_channels"] != in_channels:
        raise ValueError(
            f"checkpoint {init_checkpoint} has a {source['in_channels']}-channel stem; fine-tuning on "
            f"{in_channels}-channel clips needs a network of that modality"
        )
    args = {**source, "num_classes": n_classes, "embedding_dim": None, "dropout": config.dropout}
    network = build_model(**args)
    backbone = {k: v for k, v in network_state(checkpoint).items() if k.startswith("backbone.")}
    missing, _ = network.load_state_dict(backbone, strict=False)
    if any(k.startswith("backbone.") for k in missing):
        raise ValueError(f"checkpoint {init_checkpoint} lacks backbone weights: {missing[:3]} ...")
    return network, args


def _clip_dataset(
    layout: RunLayout,
    videos: pd.DataFrame,
    modality: str,
    clip_length: int,
    clips_per_video: int,
    transform: ClipTransform,
    frame_stride: int = 1,
    seed: int = 0,
) -> ClipDataset:
    video_ids = videos["video_id"]
    keys = video_clip_keys(layout, video_ids, (modality,), clip_length, clips_per_video, frame_stride)
    return ClipDataset(
        layout,
        keys,
        (modality,),
        clip_length,
        transform,
        frame_stride=frame_stride,
        by_video=transform.train,
        jitter_segments=clips_per_video if transform.train else 0,
        labels=dict(zip(videos["video_id"], videos["label_index"], strict=True)),
        seed=seed,
    )


def _probabilities(model: nn.Module, clips: Tensor) -> Tensor:
    return torch.softmax(model(clips).float(), dim=1)


def predict_videos(
    model: nn.Module,
    layout: RunLayout,
    video_ids: Sequence[str],
    modality: str,
    n_clips: int = 5,
    clip_length: int = 16,
    crop_size: int = 112,
    frame_stride: int = 1,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    amp: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Class probabilities of videos: softmax of ``n_clips`` evenly spaced centre-cropped clips, averaged
    (MotionFit's test protocol): ``(video_ids, probabilities [V, K] float32)`` (see :func:`video_outputs`)."""
    return video_outputs(
        model,
        layout,
        video_ids,
        modality,
        n_clips,
        clip_length,
        crop_size,
        _probabilities,
        frame_stride,
        batch_size,
        device,
        num_workers,
        amp,
    )


def finetune(
    layout: RunLayout,
    manifest: pd.DataFrame,
    config: FinetuneConfig,
    init_checkpoint: str | None,
    stage_name: str,
    device: str | torch.device | None = None,
    modality: Literal["rgb", "flow"] = "rgb",
    on_epoch_end: EpochCallback | None = None,
    data_key: str | None = None,
) -> dict[str, Any]:
    """Fine-tune ``init_checkpoint``'s network (or a fresh one when None) on the target's labelled train
    split, then score the test split; resumable (see :func:`fit`). Test predictions are written to
    ``checkpoints/<stage_name>/test_predictions.parquet`` (``video_id, label_index, probabilities``).

    Returns ``{stage, checkpoint, init_checkpoint, modality, epochs, n_videos, train_loss, test_top1,
    n_test_videos}``.
    """
    device = resolve_device(device)
    amp = use_amp(config, device)
    train_videos = labelled_videos(manifest, "train")
    if train_videos.empty:
        raise ValueError("manifest has no labelled target train videos to fine-tune on")
    n_classes = num_classes(manifest)
    seed_everything(config.seed)
    network, args = _initial_network(config, init_checkpoint, MODALITY_CHANNELS[modality], n_classes)
    if init_checkpoint is not None:
        freeze_blocks(network, config.freeze_blocks)
    network = prepare_model(network, device, amp)
    transform = clip_transform(config)
    train_set = _clip_dataset(
        layout,
        train_videos,
        modality,
        config.clip_length,
        config.clips_per_video,
        transform,
        config.frame_stride,
        config.seed,
    )
    loader = clip_loader(
        train_set, config.batch_size, device, shuffle=True, num_workers=config.num_workers, seed=config.seed
    )
    val_videos = labelled_videos(manifest, config.val_split)
    val_loader = None
    if config.schedule == "plateau" and len(val_videos):
        val_set = _clip_dataset(
            layout, val_videos, modality, config.clip_length, 1, clip_transform(config, train=False)
        )
        val_loader = clip_loader(val_set, config.batch_size, device, shuffle=False)
    optimizer = make_optimizer(network.parameters(), config)
    if config.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.1, patience=config.plateau_patience
        )
    else:
        scheduler = make_lr_scheduler(optimizer, len(loader), config)
    scaler = make_scaler(config, device)
    state = TrainingState(network, optimizer, scheduler, scaler, network_args=args)

    def step(batch: dict[str, Any]) -> StepOutput:
        logits = network(clips_as_batch(batch[modality], amp))  # [B, 1, C, T, H, W] video items
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["label"])
        accuracy = 100.0 * (logits.argmax(dim=1) == batch["label"]).float().mean()
        return StepOutput(loss, {"train_top1": accuracy}, n_clips=logits.shape[0])

    train_step = distributed.data_parallel(network, step, device)

    def run_epoch(epoch: int) -> dict[str, Any]:
        loader.set_epoch(epoch)
        per_iteration = None if config.schedule == "plateau" else scheduler
        metrics = train_one_epoch(
            network,
            train_step,
            optimizer,
            per_iteration,
            loader,
            device,
            epoch,
            scaler,
            amp=amp,
            channels_last=amp,
        )
        if config.schedule == "plateau":
            monitored = metrics["loss"]
            if val_loader is not None:
                _, labels, logits = predict_clips(network, val_loader, device, modality, amp, amp)
                monitored = torch.nn.functional.cross_entropy(
                    torch.from_numpy(logits), torch.from_numpy(labels)
                ).item()
                metrics["val_loss"] = monitored
            scheduler.step(monitored)
        return metrics

    history = fit(layout, stage_name, config, state, run_epoch, on_epoch_end, data_key)
    summary: dict[str, Any] = {
        "stage": stage_name,
        "checkpoint": layout.checkpoint(stage_name),
        "init_checkpoint": init_checkpoint,
        "modality": modality,
        "epochs": len(history),
        "n_videos": len(train_set),
        "train_loss": last_metrics(history).get("loss"),
    }
    test_videos = labelled_videos(manifest, config.test_split)
    if len(test_videos):
        video_ids, probabilities = predict_videos(
            network,
            layout,
            test_videos["video_id"].tolist(),
            modality,
            config.test_clips,
            config.clip_length,
            config.crop_size,
            config.frame_stride,
            config.batch_size,
            device,
            config.num_workers,
            amp,
        )
        labels = test_videos.set_index("video_id").loc[video_ids, "label_index"].to_numpy()
        if distributed.is_main():
            write_table(
                layout.test_predictions(stage_name),
                pd.DataFrame(
                    {"video_id": video_ids, "label_index": labels, "probabilities": list(probabilities)}
                ),
            )
        summary.update(
            test_top1=float(100.0 * (probabilities.argmax(axis=1) == labels).mean()),
            n_test_videos=len(video_ids),
        )
    logger.info("fine-tuning done: %s", summary)
    return summary
