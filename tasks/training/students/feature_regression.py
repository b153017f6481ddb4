"""MERS and MARS (Crasto et al., CVPR 2019): an RGB network regresses the frozen flow teacher's features.

The teacher was trained on the flow of the labelled target's train videos; the RGB student trains on the same
videos (never the test split), each RGB clip paired with the flow clip of the same frames, crop and flip
(a :class:`ClipDataset` of both modalities). The feature loss is the mean squared error between the two
networks' features at the layer before the final fully-connected layer (globally pooled conv5), weighted by
alpha (``StudentConfig.feature_weight``):

- ``mers`` (Motion Emulating RGB Stream): ``alpha * MSE`` alone. The student has no classifier; it is then
  fine-tuned on the target like the other students (the paper trains only its last layer then; the shared
  fine-tuning stage trains the blocks it does not freeze).
- ``mars`` (Motion-Augmented RGB Stream): ``cross-entropy + alpha * MSE`` on the target's labels (alpha 50).
  As in the paper, the network this trains is the one scored on the target test split, without a second
  training on the same videos.

Each epoch reports the regression's health beside the loss: the unweighted MSE, its ``feature_r2`` (1 - MSE
over the variance of the teacher's features in the batch: 0 for a student that outputs their batch mean)
and the root mean square of both networks' features.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from motionfit.models.video_net import VideoNet, build_model
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import MODALITY_CHANNELS, ClipDataset, labelled_videos, num_classes
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.loop import clip_transform, clips_as_batch, model_args, use_amp
from motionfit.tasks.training.students.objective import (
    ObjectiveSetup,
    frozen_teacher,
    student_modalities,
    video_keys,
)


class FeatureRegression:
    """The feature loss of MERS and MARS against ``teacher`` (the flow teacher, eval mode, no gradients)."""

    def __init__(self, teacher: VideoNet) -> None:
        self.teacher = teacher

    def loss(self, student_features: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """``(MSE, teacher features [B, D])`` of the student's pooled features ``[B, D]`` against the
        teacher's on the paired flow clips ``[B, 2, T, S, S]``; gradients reach the student only."""
        with torch.no_grad():
            teacher_features = self.teacher.features(flow).float()
        return F.mse_loss(student_features.float(), teacher_features), teacher_features


def regression_health(student_features: Tensor, teacher_features: Tensor) -> dict[str, Tensor]:
    """``feature_r2`` (1 - squared error over the teacher features' squared deviation from their batch mean)
    and the root mean square of each network's features ``[B, D]``."""
    student, teacher = student_features.detach().float(), teacher_features.float()
    spread = (teacher - teacher.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
    return {
        "feature_r2": 1.0 - (student - teacher).pow(2).sum() / spread,
        "student_feature_rms": student.pow(2).mean().sqrt(),
        "teacher_feature_rms": teacher.pow(2).mean().sqrt(),
    }


def setup(
    layout: RunLayout, manifest: pd.DataFrame, config: StudentConfig, device: torch.device
) -> ObjectiveSetup:
    """The MERS or MARS student (``config.objective``) on the paired clips of the labelled target train
    videos."""
    classify = config.objective == "mars"
    labelled = labelled_videos(manifest, "train")
    if labelled.empty:
        raise ValueError(f"{config.objective} needs labelled target train videos; the manifest has none")
    dataset = ClipDataset(
        layout,
        video_keys(layout, labelled["video_id"].tolist(), config),
        student_modalities(config),
        config.clip_length,
        clip_transform(config),
        frame_stride=config.frame_stride,
        jitter_segments=config.clips_per_video,
        labels=dict(zip(labelled["video_id"], labelled["label_index"], strict=True)),
        seed=config.seed,
    )
    args = model_args(config, MODALITY_CHANNELS["rgb"], num_classes(manifest) if classify else None)
    network = build_model(**args)
    regression = FeatureRegression(frozen_teacher(layout, config, device))
    if regression.teacher.out_features != network.out_features:
        raise ValueError(
            f"the teacher of {config.teacher_stage!r} has {regression.teacher.out_features} features and the "
            f"{config.objective} student {network.out_features}: regressing them needs the same width "
            "(give the student section the teacher's arch, width_multiplier and layers)"
        )
    channels_last = use_amp(config, device)

    def loss_fn(batch: dict[str, Any], feature_map: Tensor, epoch: int) -> tuple[Tensor, dict[str, Any], Any]:
        features = network.pool(feature_map)
        mse, teacher_features = regression.loss(features, clips_as_batch(batch["flow"], channels_last))
        metrics: dict[str, Any] = {
            "feature_mse": mse.detach(),
            **regression_health(features, teacher_features),
        }
        loss = config.feature_weight * mse
        if classify:
            logits = network.classify(feature_map).float()
            classification = F.cross_entropy(logits, batch["label"])
            loss = loss + classification
            metrics["classification_loss"] = classification.detach()
            metrics["train_top1"] = 100.0 * (logits.argmax(dim=1) == batch["label"]).float().mean()
        return loss, metrics, None

    return ObjectiveSetup(network, args, dataset, loss_fn)
