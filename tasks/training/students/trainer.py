"""The RGB student: self-training on motion knowledge, without flow at inference.

Objectives (``StudentConfig.objective``):

- ``pseudo_labels`` (MotionFit, Gavrilyuk et al. 2021): cross-entropy of the RGB network on every clip of the
  unlabelled videos against the flow teacher's clip-level pseudo-labels (soft with a temperature, hard, or
  top-k; see :func:`motionfit.tasks.pseudo_label.pseudo_targets`), on the very clips the teacher labelled.
- ``local_aggregation`` (Video Local Aggregation with an IDT prior, Tokmakov, Hebert & Schmid): a 128-d
  embedding per video, a memory bank, instance recognition for the warm-up epochs, then Local Aggregation
  whose close neighbours are the videos sharing a cluster with the anchor in any of the m k-means runs on
  IDT Fisher vectors (``clusters.parquet``); T 0.07, 4096 background neighbours (capped by the bank size).
- ``cmpl`` (Xu et al., CVPR 2022): semi-supervised training of a primary and a 1/4-width auxiliary
  network on labelled target and unlabelled videos that pseudo-label each other
  (:mod:`motionfit.tasks.training.students.cmpl`).

MSCL options (Ni et al. 2022) for every objective: motion differential sampling (train on the more dynamic
half of each video's clips, :mod:`motionfit.tasks.motion.sampling`) and the local motion contrastive loss
between the student's per-time-step features and the frozen flow teacher's, added with a weight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from motionfit.models.cmpl import CMPL_THRESHOLD, PseudoLabelScheme
from motionfit.models.local_aggregation import (
    BANK_MOMENTUM,
    IR_NEGATIVES,
    LA_BACKGROUND_NEIGHBOURS,
    LA_TEMPERATURE,
    MemoryBank,
    instance_recognition_loss,
    local_aggregation_loss,
)
from motionfit.models.motion_contrastive import (
    LMCL_TEMPERATURE,
    TimeStepProjection,
    local_motion_contrastive_loss,
    rotate_flow,
)
from motionfit.models.video_net import VideoNet, build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import (
    MODALITY_CHANNELS,
    ClipDataset,
    EpochSampler,
    clip_keys,
    clip_span,
    frame_counts,
    make_loader,
    unlabelled_videos,
)
from motionfit.tasks.motion.sampling import FLOW_BOUND, motion_differential_keys
from motionfit.tasks.training.loop import (
    EpochCallback,
    StepOutput,
    TrainingConfig,
    TrainingState,
    checkpoint_url,
    clips_as_batch,
    fit,
    last_metrics,
    load_network,
    make_lr_scheduler,
    make_optimizer,
    make_scaler,
    model_args,
    prepare_model,
    resolve_device,
    seed_everything,
    train_one_epoch,
    use_amp,
)
from motionfit.tasks.training.pseudo_labels import TargetMode, logits_matrix, pseudo_targets
from motionfit.tasks.training.teacher import TEACHER_STAGE

logger = logging.getLogger(__name__)

STUDENT_STAGE = "student"
STUDENT_KEY = "student"
"""Name of the exported network inside the trained module (checkpoint prefix ``student.``)."""


class StudentConfig(TrainingConfig):
    """The RGB student (R(2+1)D-18, 16 x 112 x 112 in MotionFit, CMPL and the IDT-prior paper)."""

    objective: Literal["pseudo_labels", "local_aggregation", "cmpl"] = Field(
        "pseudo_labels", description="MotionFit pseudo-labels, IDT-prior Local Aggregation, or CMPL"
    )
    pseudo_labels_url: str | None = Field(
        None,
        description="pseudo-label table to train on (default: the run's pseudo_labels.parquet); the "
        "supervised upper bound points it at the held-back true labels",
    )
    epochs: int = Field(30, ge=1, description="training epochs")
    lr: float = Field(0.01, gt=0, description="peak SGD learning rate")
    warmup_epochs: float = Field(1.0, ge=0, description="linear LR warm-up (epochs)")
    clips_per_video: int = Field(
        10, ge=1, description="clip keys per video that LA/CMPL draw one clip from per visit (segments)"
    )
    # MotionFit pseudo-labels
    target_mode: TargetMode = Field("soft", description="pseudo-label targets: soft (MotionFit), hard, topk")
    target_temperature: float = Field(1.0, gt=0, description="softmax temperature of soft/top-k targets")
    target_top_k: int = Field(5, ge=1, description="classes kept by top-k targets")
    # Local Aggregation with the IDT prior
    embedding_dim: int = Field(128, ge=1, description="embedding size (Wu et al.; Zhuang et al.: 128)")
    la_temperature: float = Field(LA_TEMPERATURE, gt=0, description="softmax temperature T (0.07)")
    la_background_neighbours: int = Field(
        LA_BACKGROUND_NEIGHBOURS, ge=1, description="background neighbours k (4096, capped by the bank size)"
    )
    ir_negatives: int = Field(IR_NEGATIVES, ge=1, description="negatives per sample of instance recognition")
    ir_warmup_epochs: int = Field(
        10,
        ge=0,
        description="epochs of instance recognition before Local Aggregation (Zhuang et al. warm-up)",
    )
    bank_momentum: float = Field(BANK_MOMENTUM, ge=0, lt=1, description="memory bank momentum (0.5)")
    # CMPL
    cmpl_scheme: PseudoLabelScheme = Field("cross", description="CMPL pseudo-labelling scheme (cross)")
    cmpl_threshold: float = Field(CMPL_THRESHOLD, ge=0, le=1, description="confidence threshold tau (0.95)")
    auxiliary_width: float = Field(0.25, gt=0, description="auxiliary network width factor (CMPL: 1/4)")
    unlabelled_ratio: int = Field(
        3, ge=1, description="unlabelled videos per labelled video in a batch (FixMatch's mu; chosen here: 3)"
    )
    unlabelled_weight: float = Field(1.0, ge=0, description="weight of the unlabelled loss (FixMatch: 1)")
    eval_split: str = Field("val", description="target split scored after each CMPL epoch (if present)")
    # MSCL
    motion_sampling: bool = Field(False, description="MSCL motion differential sampling (dynamic half)")
    lmcl_weight: float = Field(
        0.0, ge=0, description="weight of MSCL's local motion contrastive loss; 0: off"
    )
    lmcl_temperature: float = Field(LMCL_TEMPERATURE, gt=0, description="InfoNCE temperature of LMCL")
    lmcl_embedding_dim: int = Field(128, ge=1, description="projection size of the LMCL heads")
    teacher_stage: str = Field(TEACHER_STAGE, description="stage of the flow teacher (LMCL)")
    flow_bound: float = Field(FLOW_BOUND, gt=0, description="flow quantisation bound (motion scores)")


# --------------------------------------------------------------------------------------------------------
# Heads applied to a backbone feature map (one backbone pass serves the head and the LMCL features)


def classify(network: VideoNet, feature_map: Tensor) -> Tensor:
    """Class logits ``[B, K]`` from ``network``'s feature map ``[B, D, T', H', W']`` (as ``network(x)``)."""
    return network.fc(network.dropout(network.pool(feature_map).flatten(1)))


def embed(network: VideoNet, feature_map: Tensor) -> Tensor:
    """L2-normalised embedding ``[B, E]`` from a feature map (as ``network.embed(x)``)."""
    return F.normalize(network.embedding(network.pool(feature_map).flatten(1)), dim=1)


class MotionContrast:
    """MSCL's local motion contrast against the frozen flow teacher: per-time-step projections of the
    student's and the teacher's feature maps (trainable heads, part of the student's module) and the
    teacher itself (frozen, not saved with the student).

    Args:
        teacher: the flow teacher (eval mode, no gradients).
        heads: ``ModuleDict`` with ``student`` and ``teacher`` :class:`TimeStepProjection` heads.
        temperature: InfoNCE temperature.
    """

    def __init__(self, teacher: VideoNet, heads: nn.ModuleDict, temperature: float) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.heads = heads
        self.temperature = temperature

    @staticmethod
    def build_heads(
        student: VideoNet, teacher: VideoNet, config: StudentConfig, device: torch.device
    ) -> nn.ModuleDict:
        """Heads pooling both feature maps to the same number of time steps (the fewer of the two)."""
        steps = []
        for network, channels in ((student, MODALITY_CHANNELS["rgb"]), (teacher, MODALITY_CHANNELS["flow"])):
            probe = torch.zeros(
                1, channels, config.clip_length, config.crop_size, config.crop_size, device=device
            )
            was_training = network.training
            with torch.no_grad():
                steps.append(network.eval().feature_map(probe).shape[2])
            network.train(was_training)
        n_steps = min(steps)
        return nn.ModuleDict(
            {
                "student": TimeStepProjection(
                    student.out_features, config.lmcl_embedding_dim, n_steps=n_steps
                ),
                "teacher": TimeStepProjection(
                    teacher.out_features, config.lmcl_embedding_dim, n_steps=n_steps
                ),
            }
        ).to(device)

    def loss(self, student_feature_map: Tensor, flow: Tensor) -> Tensor:
        """LMCL of the student's ``[B, D, T', H', W']`` features against the teacher on the aligned flow
        clips ``[B, 2, T, S, S]`` (negatives: other time steps and the rotated flow)."""
        with torch.no_grad():
            teacher_maps = self.teacher.feature_map(torch.cat([flow, rotate_flow(flow)]))
        teacher_map, rotated_map = teacher_maps.chunk(2)
        return local_motion_contrastive_loss(
            self.heads["student"](student_feature_map),
            self.heads["teacher"](teacher_map),
            self.heads["teacher"](rotated_map),
            self.temperature,
        )


def load_motion_contrast(
    layout: RunLayout, student: VideoNet, config: StudentConfig, device: torch.device
) -> tuple[MotionContrast, nn.ModuleDict]:
    """The frozen teacher of ``config.teacher_stage`` and fresh LMCL heads for ``student``."""
    teacher, _ = load_network(checkpoint_url(layout, config.teacher_stage), device)
    heads = MotionContrast.build_heads(student, teacher, config, device)
    return MotionContrast(teacher, heads, config.lmcl_temperature), heads


# --------------------------------------------------------------------------------------------------------
# Data


def training_keys(layout: RunLayout, keys: pd.DataFrame, config: StudentConfig) -> pd.DataFrame:
    """``keys`` restricted to the more dynamic half of each video when motion sampling is on."""
    if not config.motion_sampling:
        return keys
    return motion_differential_keys(layout, keys, config.clip_length, config.frame_stride, config.flow_bound)


def student_modalities(config: StudentConfig) -> tuple[str, ...]:
    """RGB, plus the aligned flow clips when LMCL is on."""
    return ("rgb", "flow") if config.lmcl_weight > 0 else ("rgb",)


def video_keys(layout: RunLayout, video_ids: list[str], config: StudentConfig) -> pd.DataFrame:
    """``clips_per_video`` keys of every video readable in the student's modalities (MDS applied)."""
    counts = frame_counts(layout, video_ids, student_modalities(config))
    keys = clip_keys(counts, clip_span(config.clip_length, config.frame_stride), config.clips_per_video)
    return training_keys(layout, keys, config)


def _train_loader(
    dataset: ClipDataset, config: StudentConfig, device: torch.device, batch_size: int | None = None
) -> tuple[Any, EpochSampler]:
    batch_size = batch_size or config.batch_size
    sampler = EpochSampler(len(dataset), seed=config.seed)
    loader = make_loader(
        dataset,
        batch_size,
        sampler,
        device,
        config.num_workers,
        drop_last=len(dataset) > batch_size,
        seed=config.seed,
    )
    return loader, sampler


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


# --------------------------------------------------------------------------------------------------------
# Objectives: each returns (trained module, exported network args, loader, sampler, step builder)


def _pseudo_label_setup(
    layout: RunLayout, manifest: pd.DataFrame, config: StudentConfig, device: torch.device
) -> dict[str, Any]:
    pseudo_labels = read_table(config.pseudo_labels_url or layout.pseudo_labels)
    counts = frame_counts(layout, pseudo_labels["video_id"].unique().tolist(), student_modalities(config))
    rows = pseudo_labels[pseudo_labels["video_id"].isin(counts)]
    keys = rows.assign(n_frames=rows["video_id"].map(counts).astype(np.int64)).reset_index(drop=True)
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
        config.clip_transform(),
        frame_stride=config.frame_stride,
        seed=config.seed,
    )
    args = model_args(config, MODALITY_CHANNELS["rgb"], targets.shape[1])
    network = build_model(**args)

    def loss_fn(batch: dict[str, Any], feature_map: Tensor, epoch: int) -> tuple[Tensor, dict[str, Any], Any]:
        logits = classify(network, feature_map)
        batch_targets = targets[batch["index"]]
        loss = F.cross_entropy(logits.float(), batch_targets)
        agreement = (logits.argmax(dim=1) == batch_targets.argmax(dim=1)).float().mean()
        return loss, {"pseudo_label_agreement": agreement}, None

    return {"network": network, "args": args, "dataset": dataset, "loss_fn": loss_fn, "extra": {}}


def _local_aggregation_setup(
    layout: RunLayout, manifest: pd.DataFrame, config: StudentConfig, device: torch.device
) -> dict[str, Any]:
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
        config.clip_transform(),
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
        embeddings = embed(network, feature_map).float()
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
    return {"network": network, "args": args, "dataset": dataset, "loss_fn": loss_fn, "extra": {"bank": bank}}


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
    if config.objective == "cmpl":
        from motionfit.tasks.training.students.cmpl import train_cmpl  # cmpl_training imports this module

        return train_cmpl(layout, manifest, config, device, on_epoch_end, stage, data_key)
    amp = use_amp(config, device)
    seed_everything(config.seed)
    setup = (_pseudo_label_setup if config.objective == "pseudo_labels" else _local_aggregation_setup)(
        layout, manifest, config, device
    )
    network: VideoNet = prepare_model(setup["network"], device, amp)
    modules: dict[str, nn.Module] = {STUDENT_KEY: network, **setup["extra"]}
    contrast = None
    if config.lmcl_weight > 0:
        contrast, modules["lmcl_heads"] = load_motion_contrast(layout, network, config, device)
    model = nn.ModuleDict(modules).to(device)
    dataset: ClipDataset = setup["dataset"]
    loader, sampler = _train_loader(dataset, config, device)
    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_lr_scheduler(optimizer, len(loader), config)
    scaler = make_scaler(config, device)
    state = TrainingState(
        model, optimizer, scheduler, scaler, setup["args"], network_prefix=f"{STUDENT_KEY}."
    )
    loss_fn: Callable[..., tuple[Tensor, dict[str, Any], Any]] = setup["loss_fn"]
    current_epoch = [0]

    def step(batch: dict[str, Any]) -> StepOutput:
        clips = clips_as_batch(batch["rgb"], amp)
        feature_map = network.feature_map(clips)
        loss, metrics, after_update = loss_fn(batch, feature_map, current_epoch[0])
        if contrast is not None:
            motion_loss = contrast.loss(feature_map, clips_as_batch(batch["flow"], amp))
            metrics = {**metrics, "objective_loss": loss.detach(), "lmcl_loss": motion_loss.detach()}
            loss = loss + config.lmcl_weight * motion_loss
        return StepOutput(loss, metrics, n_clips=clips.shape[0], after_update=after_update)

    def run_epoch(epoch: int) -> dict[str, Any]:
        current_epoch[0] = epoch
        sampler.set_epoch(epoch)
        return train_one_epoch(
            model, step, optimizer, scheduler, loader, device, epoch, scaler, amp=amp, channels_last=amp
        )

    history = fit(layout, stage, config, state, run_epoch, on_epoch_end, data_key)
    summary = {
        "stage": stage,
        "checkpoint": checkpoint_url(layout, stage),
        "objective": config.objective,
        "epochs": len(history),
        "n_items": len(dataset),
        "train_loss": last_metrics(history).get("loss"),
        "motion_sampling": config.motion_sampling,
        "lmcl_weight": config.lmcl_weight,
    }
    logger.info("student trained: %s", summary)
    return summary
