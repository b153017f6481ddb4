"""MSCL's local motion contrastive loss (Ni et al. 2022) for any student: per-time-step projections of the
student's feature map and of the frozen flow teacher's on the aligned flow clip, contrasted with InfoNCE
(negatives: the other time steps and the teacher's features of the rotated flow)."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from motionfit.models.motion_contrastive import (
    TimeStepProjection,
    local_motion_contrastive_loss,
    other_clip_loss,
    rotate_flow,
)
from motionfit.models.video_net import VideoNet
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import MODALITY_CHANNELS
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.students.objective import frozen_teacher

logger = logging.getLogger(__name__)


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
        self.teacher = teacher
        self.heads = heads
        self.temperature = temperature

    @property
    def loss_chance(self) -> float:
        """The loss of an anchor equally similar to its 2T keys: ln 2T (T time steps, each also rotated)."""
        return math.log(2 * self.heads["student"].n_steps)

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
        if n_steps == 1:
            logger.warning(
                "LMCL: the feature maps of %d-frame clips have one time step, so each clip's only negative "
                "is its own rotated flow (chance ln 2 = 0.69); longer clips give it more time steps",
                config.clip_length,
            )
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

    def loss(self, student_feature_map: Tensor, flow: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        """LMCL of the student's ``[B, D, T', H', W']`` features against the teacher on the aligned flow
        clips ``[B, 2, T, S, S]`` (negatives: other time steps and the rotated flow), and the step's figures
        for the history: the loss, its chance value and, with two or more clips, its other-clip control
        (:func:`other_clip_loss`)."""
        with torch.no_grad():
            teacher_maps = self.teacher.feature_map(torch.cat([flow, rotate_flow(flow)]))
        teacher_map, rotated_map = teacher_maps.chunk(2)
        steps = (
            self.heads["student"](student_feature_map),
            self.heads["teacher"](teacher_map),
            self.heads["teacher"](rotated_map),
        )
        loss = local_motion_contrastive_loss(*steps, self.temperature)
        metrics: dict[str, Tensor | float] = {
            "lmcl_loss": loss.detach(),
            "lmcl_loss_chance": self.loss_chance,
        }
        if flow.shape[0] > 1:
            metrics["lmcl_loss_other_clip"] = other_clip_loss(*steps, self.temperature)
        return loss, metrics


def load_motion_contrast(
    layout: RunLayout, student: VideoNet, config: StudentConfig, device: torch.device
) -> tuple[MotionContrast, nn.ModuleDict]:
    """The frozen teacher of ``config.teacher_stage`` and fresh LMCL heads for ``student``."""
    teacher = frozen_teacher(layout, config, device)
    heads = MotionContrast.build_heads(student, teacher, config, device)
    return MotionContrast(teacher, heads, config.lmcl_temperature), heads
