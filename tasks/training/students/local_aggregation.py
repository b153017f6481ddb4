"""Video Local Aggregation with an IDT prior (Tokmakov, Hebert & Schmid): a 128-d embedding per video and a
memory bank; instance recognition for the warm-up epochs, then Local Aggregation whose close neighbours are
the videos sharing a cluster with the anchor in any of the m k-means runs on IDT Fisher vectors
(``clusters.parquet``); T 0.07, 4096 background neighbours (capped by the bank size)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from motionfit.models.local_aggregation import (
    MemoryBank,
    bank_health,
    instance_recognition_loss,
    local_aggregation_chance,
    local_aggregation_loss,
)
from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import MODALITY_CHANNELS, ClipDataset, clip_loader, unlabelled_videos
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.loop import clip_transform, clips_as_batch, model_args, to_device
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

    def initialise_bank() -> None:
        """Every bank row from the initial network (train-mode batch norm, features normalised together)."""
        if config.bank_init == "random":
            return
        loader = clip_loader(
            dataset, config.batch_size, device, shuffle=False, num_workers=config.num_workers
        )
        network.train()
        with torch.no_grad():
            features = [
                network.pool(network.feature_map(clips_as_batch(to_device(batch, device)["rgb"])))
                for batch in loader
            ]
            bank.embeddings.copy_(network.embed_features(torch.cat(features)).float())

    health_rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.seed))[:2048]
    la_chance = local_aggregation_chance(cluster_labels, health_rows.to(device))
    ir_chance = math.log(min(config.ir_negatives + 1, len(dataset)))

    def epoch_health(epoch: int, metrics: dict[str, Any]) -> dict[str, float]:
        """The loss's chance value, the bank's spread and how many of its neighbours share a cluster."""
        chance = ir_chance if epoch < config.ir_warmup_epochs else la_chance
        health = {"loss_chance": chance, **bank_health(bank.embeddings, cluster_labels, seed=config.seed)}
        if abs(metrics["loss"] - chance) <= 0.02 * chance:
            logger.warning(
                "local aggregation epoch %d: loss %.3f sits at its chance value %.3f (bank mean cosine "
                "%.2f): the embedding does not follow the clusters",
                epoch,
                metrics["loss"],
                chance,
                health["bank_mean_cosine"],
            )
        return health

    logger.info("local aggregation on %d videos, %d clusterings", len(dataset), cluster_labels.shape[0])
    return ObjectiveSetup(
        network,
        args,
        dataset,
        loss_fn,
        extra={"bank": bank},
        prepare=initialise_bank,
        epoch_health=epoch_health,
    )
