"""Video Local Aggregation with an IDT prior (Tokmakov, Hebert & Schmid): a 128-d embedding per video and a
memory bank; instance recognition for the warm-up epochs, then Local Aggregation whose close neighbours are
the videos sharing a cluster with the anchor in any of the m k-means runs on IDT Fisher vectors
(``clusters.parquet``); T 0.07, 4096 background neighbours (capped by the bank size)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from motionfit.models.local_aggregation import MemoryBank, instance_recognition_loss, local_aggregation_loss
from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import MODALITY_CHANNELS, ClipDataset, unlabelled_videos
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.loop import clip_transform, model_args
from motionfit.tasks.training.students.objective import ObjectiveSetup, student_modalities, video_keys

logger = logging.getLogger(__name__)


def cluster_matrix(clusters: pd.DataFrame, video_ids: list[str]) -> np.ndarray:
    """``[m, N] int64`` cluster of each of ``video_ids`` in each of the m clusterings (one per ``(run, k)``
    of ``clusters``: columns ``video_id, run, k, cluster``); raises when a video lacks a clustering."""
    table = clusters.pivot_table(index="video_id", columns=["run", "k"], values="cluster", aggfunc="first")
    missing = [v for v in video_ids if v not in table.index]
    if missing:
        raise KeyError(f"{len(missing)} videos have no cluster in clusters.parquet (first: {missing[0]})")
    rows = table.loc[video_ids]
    if rows.isna().any().any():
        raise ValueError("clusters.parquet does not assign every video in every (run, k) clustering")
    return rows.to_numpy(dtype=np.int64).T.copy()


def setup(
    layout: RunLayout, manifest: pd.DataFrame, config: StudentConfig, device: torch.device
) -> ObjectiveSetup:
    clusters = read_table(layout.clusters)
    clustered = set(clusters["video_id"])
    video_ids = [v for v in unlabelled_videos(manifest) if v in clustered]
    if not video_ids:
        raise ValueError(
            "no unlabelled video has a cluster in clusters.parquet: run the IDT clustering first"
        )
    keys = video_keys(layout, video_ids, config)
    dataset = ClipDataset(
        layout,
        keys,
        student_modalities(config),
        config.clip_length,
        clip_transform(config),
        frame_stride=config.frame_stride,
        by_video=True,
        jitter_segments=config.clips_per_video,
        seed=config.seed,
    )
    cluster_labels = torch.from_numpy(cluster_matrix(clusters, dataset.video_ids)).to(device)
    args = model_args(config, MODALITY_CHANNELS["rgb"], None, embedding_dim=config.embedding_dim)
    network = build_model(**args)
    generator = torch.Generator().manual_seed(config.seed)
    bank = MemoryBank(len(dataset), config.embedding_dim, config.bank_momentum, generator=generator)

    def loss_fn(batch: dict[str, Any], feature_map: Tensor, epoch: int) -> tuple[Tensor, dict[str, Any], Any]:
        embeddings = network.embed(feature_map).float()
        indices = batch["index"]
        if epoch < config.ir_warmup_epochs:
            loss = instance_recognition_loss(
                embeddings, indices, bank.embeddings, config.la_temperature, config.ir_negatives
            )
        else:
            loss = local_aggregation_loss(
                embeddings,
                indices,
                bank.embeddings,
                cluster_labels,
                config.la_temperature,
                config.la_background_neighbours,
            )
        detached = embeddings.detach()
        return loss, {}, lambda: bank.update(indices, detached)

    logger.info("local aggregation on %d videos, %d clusterings", len(dataset), cluster_labels.shape[0])
    return ObjectiveSetup(network, args, dataset, loss_fn, extra={"bank": bank})
