"""MotionFit's objective (Gavrilyuk et al. 2021): cross-entropy of the RGB network on every clip of the
unlabelled videos against the flow teacher's clip-level pseudo-labels (soft with a temperature, hard, or
top-k; :func:`~motionfit.tasks.training.pseudo_labels.pseudo_targets`), on the clips the teacher
labelled (refitted to the student's clip length when it differs from the teacher's: a longer student clip
covers the teacher's). The supervised bound trains the same way on the source's held-back labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import MODALITY_CHANNELS, ClipDataset, clip_span, fit_clip_keys, frame_counts
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.loop import clip_transform, model_args
from motionfit.tasks.training.pseudo_labels import logits_matrix, pseudo_targets
from motionfit.tasks.training.students.objective import ObjectiveSetup, student_modalities, training_keys


def setup(
    layout: RunLayout, manifest: pd.DataFrame, config: StudentConfig, device: torch.device
) -> ObjectiveSetup:
    pseudo_labels = read_table(config.pseudo_labels_url or layout.pseudo_labels)
    counts = frame_counts(layout, pseudo_labels["video_id"].unique().tolist(), student_modalities(config))
    rows = pseudo_labels[pseudo_labels["video_id"].isin(counts)]
    keys = rows.assign(n_frames=rows["video_id"].map(counts).astype(np.int64))
    keys = fit_clip_keys(keys, clip_span(config.clip_length, config.frame_stride)).reset_index(drop=True)
    keys = training_keys(layout, keys, config).reset_index(drop=True)
    targets = pseudo_targets(
        torch.from_numpy(logits_matrix(keys)),
        config.target_mode,
        config.target_temperature,
        config.target_top_k,
    ).to(device)
    dataset = ClipDataset(
        layout,
        keys.drop(columns="logits"),
        student_modalities(config),
        config.clip_length,
        clip_transform(config),
        frame_stride=config.frame_stride,
        seed=config.seed,
    )
    args = model_args(config, MODALITY_CHANNELS["rgb"], targets.shape[1])
    network = build_model(**args)

    def loss_fn(batch: dict[str, Any], feature_map: Tensor, epoch: int) -> tuple[Tensor, dict[str, Any], Any]:
        logits = network.classify(feature_map)
        batch_targets = targets[batch["index"]]
        loss = F.cross_entropy(logits.float(), batch_targets)
        agreement = 100.0 * (logits.argmax(dim=1) == batch_targets.argmax(dim=1)).float().mean()
        return loss, {"pseudo_label_agreement": agreement}, None

    return ObjectiveSetup(network, args, dataset, loss_fn)
