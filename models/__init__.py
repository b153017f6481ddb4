"""Video backbones, heads and losses (plain torch; imports nothing else of the project)."""

from motionfit.models.backbones import ARCHITECTURES, S3DBackbone, VideoResNetBackbone, build_backbone
from motionfit.models.cmpl import (
    CMPL_THRESHOLD,
    average_pseudo_labels,
    cmpl_pseudo_labels,
    cross_pseudo_labels,
    fixmatch_pseudo_labels,
    masked_pseudo_label_loss,
    maximum_pseudo_labels,
    opposite_first_pseudo_labels,
    self_first_pseudo_labels,
)
from motionfit.models.complexity import count_complexity
from motionfit.models.local_aggregation import MemoryBank, instance_recognition_loss, local_aggregation_loss
from motionfit.models.losses import hard_cross_entropy, multi_clip_cross_entropy, soft_cross_entropy
from motionfit.models.motion_contrastive import (
    TimeStepProjection,
    local_motion_contrastive_loss,
    rotate_flow,
    time_steps,
)
from motionfit.models.video_net import VideoNet, blocks_to_freeze, build_model, freeze_blocks

__all__ = [
    "ARCHITECTURES",
    "CMPL_THRESHOLD",
    "MemoryBank",
    "S3DBackbone",
    "TimeStepProjection",
    "VideoNet",
    "VideoResNetBackbone",
    "average_pseudo_labels",
    "blocks_to_freeze",
    "build_backbone",
    "build_model",
    "cmpl_pseudo_labels",
    "count_complexity",
    "cross_pseudo_labels",
    "fixmatch_pseudo_labels",
    "freeze_blocks",
    "hard_cross_entropy",
    "instance_recognition_loss",
    "local_aggregation_loss",
    "local_motion_contrastive_loss",
    "masked_pseudo_label_loss",
    "maximum_pseudo_labels",
    "multi_clip_cross_entropy",
    "opposite_first_pseudo_labels",
    "rotate_flow",
    "self_first_pseudo_labels",
    "soft_cross_entropy",
    "time_steps",
]
