"""Pseudo-labels of the unlabelled videos from the motion teacher (MotionFit, Sec. 3.2).

The teacher scores R evenly spaced clips of every unlabelled video (centre crop of its flow) and the logits
of every clip are stored in ``pseudo_labels.parquet`` with the clip's stable key (``video_id, clip_index,
start_frame, logits``). MotionFit self-trains on clip-level labels: each clip keeps its own prediction, so
the student learns the motion of that time span. The "video" level (the paper's ablation) gives every clip
the mean logits of its video, the "segment" level (TSN-style) the mean of its segment: one of ``segments``
equal spans of the video's clips. Targets (hard, soft with a temperature, or top-k) are derived from the
stored logits at training time by :func:`pseudo_targets`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import write_table
from motionfit.tasks.data.clips import (
    CLIP_KEY_COLUMNS,
    ClipDataset,
    clip_loader,
    unlabelled_videos,
    video_clip_keys,
    video_means,
)
from motionfit.tasks.data.transforms import ClipTransform
from motionfit.tasks.training.config import PseudoLabelConfig, TargetMode
from motionfit.tasks.training.loop import (
    load_network,
    predict_clips,
    prepare_model,
    resolve_device,
)

logger = logging.getLogger(__name__)

CODE_VERSION = 1
"""The stage's code version: bump it when its output changes (see :mod:`motionfit.tasks.per_video`)."""


def pseudo_targets(
    logits: torch.Tensor, mode: TargetMode = "soft", temperature: float = 1.0, k: int = 5
) -> torch.Tensor:
    """Training targets ``[N, K] float32`` (rows sum to 1) from stored teacher logits ``[N, K]``.

    ``hard``: one-hot argmax; ``soft``: ``softmax(logits / temperature)``; ``topk``: the soft targets kept on
    the k most likely classes and renormalised.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, K], got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = logits.float()
    if mode == "hard":
        return F.one_hot(logits.argmax(dim=1), logits.shape[1]).float()
    soft = torch.softmax(logits / temperature, dim=1)
    if mode == "soft":
        return soft
    if mode == "topk":
        if not 1 <= k <= logits.shape[1]:
            raise ValueError(f"k must be in [1, {logits.shape[1]}], got {k}")
        kept = torch.zeros_like(soft).scatter(1, soft.topk(k, dim=1).indices, 1.0) * soft
        return kept / kept.sum(dim=1, keepdim=True)
    raise ValueError(f"unknown pseudo-label mode {mode!r}; expected 'hard', 'soft' or 'topk'")


def logits_matrix(pseudo_labels: pd.DataFrame) -> np.ndarray:
    """The ``logits`` column as one ``[N, K] float32`` array."""
    return np.stack(pseudo_labels["logits"].to_numpy()).astype(np.float32)


def label_groups(keys: pd.DataFrame, segments: int) -> np.ndarray:
    """The group whose mean logits each clip of ``keys`` gets: its video's ``segments`` equal spans of clips
    in time order (TSN's segments; 1: the whole video), as ``<video_id>#<segment>``."""
    by_video = keys.groupby("video_id", sort=False)
    order = by_video["start_frame"].rank(method="first").to_numpy().astype(np.int64) - 1
    segment = order * segments // by_video["start_frame"].transform("size").to_numpy()
    return (keys["video_id"].astype(str) + "#" + pd.Series(segment, index=keys.index).astype(str)).to_numpy()


def generate_pseudo_labels(
    layout: RunLayout,
    manifest: pd.DataFrame,
    config: PseudoLabelConfig,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Label R clips of every unlabelled video (source videos and the target's ``unlabelled`` split) with the
    teacher and write ``pseudo_labels.parquet`` (``video_id, clip_index, start_frame, logits list<float32>``).

    The clips are the teacher's (its clip length, stride and input size, read from its checkpoint). Returns
    the written table.
    """
    device = resolve_device(device)
    amp = config.amp and device.type == "cuda"
    teacher, checkpoint = load_network(layout.checkpoint(config.teacher_stage), device)
    teacher = prepare_model(teacher, device, channels_last=amp)
    teacher_config = checkpoint["config"]
    clip_length, frame_stride = teacher_config["clip_length"], teacher_config["frame_stride"]
    modality = teacher_config.get("modality", "flow")  # checkpoints made before the choice are flow teachers
    video_ids = unlabelled_videos(manifest)
    if not video_ids:
        raise ValueError("manifest has no unlabelled (source) videos to pseudo-label")
    keys = video_clip_keys(layout, video_ids, (modality,), clip_length, config.clips_per_video, frame_stride)
    dataset = ClipDataset(
        layout,
        keys,
        (modality,),
        clip_length,
        ClipTransform(crop_size=teacher_config["crop_size"]),
        frame_stride=frame_stride,
    )
    loader = clip_loader(dataset, config.batch_size, device, shuffle=False, num_workers=config.num_workers)
    items, _, logits = predict_clips(teacher, loader, device, modality, amp, channels_last=amp)
    order = np.argsort(items, kind="stable")
    logits = logits[order]
    if config.level != "clip":
        groups = label_groups(keys, config.segments if config.level == "segment" else 1)
        group_ids, means = video_means(logits, groups)
        logits = means[pd.Index(group_ids).get_indexer(groups)].astype(np.float32)
    table = keys[CLIP_KEY_COLUMNS].assign(logits=list(logits.astype(np.float32)))
    write_table(layout.pseudo_labels, table)
    logger.info(
        "pseudo-labelled %d clips of %d videos (%s level) with %s",
        len(table),
        keys["video_id"].nunique(),
        config.level,
        layout.checkpoint(config.teacher_stage),
    )
    return table


def heldout_label_index(manifest: pd.DataFrame) -> pd.Series:
    """The target class index of every video whose held-out label is a target class (diagnostics only):
    ``heldout_label`` holds class names (mapped through the target's ``label`` -> ``label_index``) or
    indices. Indexed by ``video_id``; empty when the manifest has no held-out labels."""
    if "heldout_label" not in manifest:
        return pd.Series(dtype=np.int64)
    heldout = manifest.set_index("video_id")["heldout_label"].dropna()
    target = manifest[(manifest["dataset"] == "target") & (manifest["label_index"] >= 0)]
    class_index = dict(zip(target["label"], target["label_index"], strict=True))
    truth = heldout.map(
        lambda label: class_index.get(label, label if isinstance(label, int | np.integer) else -1)
    )
    return truth[truth >= 0].astype(np.int64)


def pseudo_label_accuracy(pseudo_labels: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, Any]:
    """Accuracy of the pseudo-labels against the held-out labels of the unlabelled videos (diagnostics only,
    :func:`heldout_label_index`). Returns ``{clip_top1, video_top1, n_clips, n_videos}`` (accuracies in
    percent; NaN accuracies and zero counts when no labelled video is pseudo-labelled).
    """
    empty = {"clip_top1": float("nan"), "video_top1": float("nan"), "n_clips": 0, "n_videos": 0}
    truth = heldout_label_index(manifest)
    rows = pseudo_labels[pseudo_labels["video_id"].isin(truth.index)]
    if rows.empty:
        return empty
    logits = logits_matrix(rows)
    labels = truth.loc[rows["video_id"]].to_numpy().astype(np.int64)
    video_ids, video_logits = video_means(logits, rows["video_id"].to_numpy())
    video_labels = truth.loc[video_ids].to_numpy().astype(np.int64)
    return {
        "clip_top1": float(100.0 * (logits.argmax(axis=1) == labels).mean()),
        "video_top1": float(100.0 * (video_logits.argmax(axis=1) == video_labels).mean()),
        "n_clips": len(rows),
        "n_videos": len(video_ids),
    }
