"""Video Local Aggregation with an IDT prior (Tokmakov, Hebert & Schmid): a 128-d embedding per video and a
memory bank; instance recognition for the warm-up epochs, then Local Aggregation whose close neighbours are
the videos sharing a cluster with the anchor in any of the m k-means runs on IDT Fisher vectors
(``clusters.parquet``) until the network has converged on them, then the joint IDT + ConvNet space tuning step
(clusters of the Fisher vectors concatenated with the bank's embeddings); T 0.07, 4096 background neighbours
(capped by the bank size)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import normalized_mutual_info_score
from torch import Tensor

from motionfit.models.local_aggregation import (
    MemoryBank,
    bank_health,
    instance_recognition_loss,
    local_aggregation_chance,
    local_aggregation_loss,
)
from motionfit.models.video_net import VideoNet, build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.matrix import read_video_matrix
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import (
    MODALITY_CHANNELS,
    ClipDataset,
    clip_loader,
    hash_seed,
    unlabelled_videos,
)
from motionfit.tasks.prior.clustering import default_n_clusters
from motionfit.tasks.prior.kmeans import kmeans
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


def _bank_training(
    layout: RunLayout, config: StudentConfig, device: torch.device, video_ids: list[str]
) -> tuple[ClipDataset, dict[str, Any], VideoNet, MemoryBank, Callable[[], None]]:
    """What every memory-bank objective trains: one clip per video per visit, a network with an embedding
    head, its bank, and the function that fills the bank from the initial network (``bank_init``)."""
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
    args = model_args(config, MODALITY_CHANNELS["rgb"], None, embedding_dim=config.embedding_dim)
    network = build_model(**args)
    generator = torch.Generator().manual_seed(config.seed)
    bank = MemoryBank(len(dataset), config.embedding_dim, config.bank_momentum, generator=generator)

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

    return dataset, args, network, bank, initialise_bank


def _instance_recognition_chance(config: StudentConfig, n_items: int) -> float:
    """The instance-recognition loss of embeddings that tell no video apart: log of the softmax's size."""
    return math.log(min(config.ir_negatives + 1, n_items))


def _warn_at_chance(epoch: int, loss: float, chance: float, mean_cosine: float) -> None:
    if abs(loss - chance) <= 0.02 * chance:
        logger.warning(
            "memory-bank student epoch %d: loss %.3f sits at its chance value %.3f (bank mean cosine %.2f): "
            "the embedding has not learned",
            epoch,
            loss,
            chance,
            mean_cosine,
        )


def _local_aggregation_setup(
    config: StudentConfig,
    dataset: ClipDataset,
    args: dict[str, Any],
    network: VideoNet,
    bank: MemoryBank,
    initialise_bank: Callable[[], None],
    cluster_labels: Callable[[int], Tensor | None],
    cluster_health: Callable[[int], dict[str, float]] | None = None,
) -> ObjectiveSetup:
    """Instance recognition for ``config.ir_warmup_epochs``, then Local Aggregation whose close neighbours
    share a cluster in ``cluster_labels(epoch)`` (``[m, N]``; None while no epoch needs clusters), with the
    health line of every epoch (plus ``cluster_health(epoch)``)."""
    ir_chance = _instance_recognition_chance(config, len(dataset))
    health_rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.seed))[:2048]

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
                cluster_labels(epoch),
                config.la_temperature,
                config.la_background_neighbours,
                config.la_include_self,
            )
        detached = embeddings.detach()
        return loss, {}, lambda: bank.update(indices, detached)

    def epoch_health(epoch: int, metrics: dict[str, Any]) -> dict[str, float]:
        """The loss's chance value, the bank's spread and how many of its neighbours share a cluster."""
        labels = cluster_labels(epoch)
        if epoch < config.ir_warmup_epochs:
            chance = ir_chance
        else:
            chance = local_aggregation_chance(labels, health_rows.to(labels.device), config.la_include_self)
        health = {"loss_chance": chance, **bank_health(bank.embeddings, labels, seed=config.seed)}
        if cluster_health is not None:
            health.update(cluster_health(epoch))
        _warn_at_chance(epoch, metrics["loss"], chance, health["bank_mean_cosine"])
        return health

    return ObjectiveSetup(
        network,
        args,
        dataset,
        loss_fn,
        extra={"bank": bank},
        prepare=initialise_bank,
        epoch_health=epoch_health,
    )


def _epoch_kmeans(
    points: Callable[[], np.ndarray], n_clusters: list[int], seed: int, device: torch.device
) -> Callable[[int], Tensor]:
    """``epoch -> [m, N]`` cluster labels: one k-means run per entry of ``n_clusters`` on ``points()``,
    redone once per epoch and seeded by ``seed``, the epoch and the run (a resumed run clusters alike)."""
    clustered: dict[int, Tensor] = {}

    def labels(epoch: int) -> Tensor:
        if epoch not in clustered:
            clustered.clear()
            values = points()
            runs = [
                kmeans(values, k, seed=hash_seed(seed, epoch, run)).labels for run, k in enumerate(n_clusters)
            ]
            clustered[epoch] = torch.from_numpy(np.stack(runs)).to(device)
        return clustered[epoch]

    return labels


def setup(
    layout: RunLayout, manifest: pd.DataFrame, config: StudentConfig, device: torch.device
) -> ObjectiveSetup:
    """Local Aggregation with the IDT prior: close neighbours from the fixed k-means runs of
    ``clusters.parquet``; for the last ``joint_space_epochs``, from k-means runs (as many, with the same K) of
    the joint space of each video's Fisher vector and bank row, weighted ``1 - w`` and ``w`` in the squared
    distance (``w = joint_space_weight``)."""
    clusters = read_table(layout.clusters)
    clustered = set(clusters["video_id"])
    video_ids = [v for v in unlabelled_videos(manifest) if v in clustered]
    if not video_ids:
        raise ValueError(
            "no unlabelled video has a cluster in clusters.parquet: run the IDT clustering first"
        )
    dataset, args, network, bank, initialise_bank = _bank_training(layout, config, device, video_ids)
    idt_labels = torch.from_numpy(cluster_matrix(clusters, dataset.video_ids)).to(device)
    logger.info("local aggregation on %d videos, %d IDT clusterings", len(dataset), idt_labels.shape[0])
    if config.joint_space_epochs == 0:
        return _local_aggregation_setup(
            config, dataset, args, network, bank, initialise_bank, lambda epoch: idt_labels
        )
    fv_ids, vectors = read_video_matrix(layout.fv_vectors)
    rows = pd.Index(fv_ids).get_indexer(dataset.video_ids)
    if (rows < 0).any():
        raise KeyError(
            f"{int((rows < 0).sum())} clustered videos have no Fisher vector in {layout.fv_vectors}"
        )
    fisher = F.normalize(torch.from_numpy(vectors[rows]).float(), dim=1).numpy()  # sketching moves the norm
    idt_part = np.sqrt(1.0 - config.joint_space_weight) * fisher

    def joint_points() -> np.ndarray:
        convnet = bank.embeddings.detach().cpu().numpy()  # unit rows
        return np.concatenate([idt_part, np.sqrt(config.joint_space_weight) * convnet], axis=1)

    clusterings = sorted(set(zip(clusters["run"], clusters["k"], strict=True)))  # cluster_matrix's order
    n_clusters = [k for _, k in clusterings]
    joint_labels = _epoch_kmeans(joint_points, n_clusters, config.seed, device)
    joint_start = config.epochs - config.joint_space_epochs
    logger.info("joint IDT + ConvNet space clusters from epoch %d (K %s)", joint_start, n_clusters)

    def cluster_labels(epoch: int) -> Tensor:
        return idt_labels if epoch < joint_start else joint_labels(epoch)

    def prior_agreement(epoch: int) -> dict[str, float]:
        """How far the joint clusters moved from the IDT prior: NMI of their first runs."""
        if epoch < joint_start:
            return {}
        joint, prior = joint_labels(epoch)[0].cpu().numpy(), idt_labels[0].cpu().numpy()
        return {"joint_prior_nmi": float(normalized_mutual_info_score(prior, joint))}

    return _local_aggregation_setup(
        config, dataset, args, network, bank, initialise_bank, cluster_labels, prior_agreement
    )


def video_setup(
    layout: RunLayout, manifest: pd.DataFrame, config: StudentConfig, device: torch.device
) -> ObjectiveSetup:
    """Video Local Aggregation without a prior (Zhuang et al.'s EM, the IDT-prior paper's baseline): the
    close neighbours come from ``la_kmeans_runs`` k-means runs of the memory bank itself, redone at the start
    of every epoch."""
    dataset, args, network, bank, initialise_bank = _bank_training(
        layout, config, device, unlabelled_videos(manifest)
    )
    n_clusters = config.la_kmeans_clusters or default_n_clusters(len(dataset))
    bank_clusters = _epoch_kmeans(
        lambda: bank.embeddings.detach().cpu().numpy(),
        [n_clusters] * config.la_kmeans_runs,
        config.seed,
        device,
    )
    logger.info(
        "video local aggregation on %d videos, %d clusters x %d runs",
        len(dataset),
        n_clusters,
        config.la_kmeans_runs,
    )
    return _local_aggregation_setup(config, dataset, args, network, bank, initialise_bank, bank_clusters)


def instance_recognition_setup(
    layout: RunLayout, manifest: pd.DataFrame, config: StudentConfig, device: torch.device
) -> ObjectiveSetup:
    """Video instance recognition (Wu et al. 2018): every video its own class, through the memory bank; the
    Local Aggregation objective whose instance-recognition warm-up lasts every epoch (no clusters)."""
    dataset, args, network, bank, initialise_bank = _bank_training(
        layout, config, device, unlabelled_videos(manifest)
    )
    every_epoch = config.model_copy(update={"ir_warmup_epochs": config.epochs})
    return _local_aggregation_setup(
        every_epoch, dataset, args, network, bank, initialise_bank, lambda epoch: None
    )
