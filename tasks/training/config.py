"""Config sections of the training stages: the settings every stage shares (:class:`TrainingConfig`) and the
flow teacher (``teacher``), pseudo-labelling (``pseudo_label``), the RGB students (``motionfit``,
``idt_la``, ``cmpl``, ``mers``, ``mars`` ...) and fine-tuning (``finetune``), each with its paper's
defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from motionfit.tasks.methods import TEACHER_STAGE

TargetMode = Literal["hard", "soft", "topk"]
CmplScheme = Literal["fixmatch", "self_first", "opposite_first", "maximum", "average", "cross"]
"""CMPL's pseudo-labelling schemes (Xu et al. 2022, supp. Table 1); FixMatch is the single-model baseline."""


class TrainingConfig(BaseModel):
    """Parameters every training stage shares (network, clips, optimisation, loader); each stage's config
    subclasses it and sets the paper's defaults."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field(
        "r2plus1d_18", description="backbone (MotionFit, CMPL and the IDT-prior paper: R(2+1)D-18)"
    )
    width_multiplier: float = Field(1.0, gt=0, description="channel width factor (1/8-1/16 for CPU presets)")
    layers: tuple[int, int, int, int] | None = Field(
        None, description="residual blocks per stage; None = 18-layer"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")
    clip_length: int = Field(16, ge=1, description="frames per clip (16 in the papers; 32/64 in ablations)")
    frame_stride: int = Field(1, ge=1, description="step between a clip's frames")
    crop_size: int = Field(112, ge=8, description="network input side (112 in the papers)")
    horizontal_flip: bool = Field(
        False, description="random horizontal flip; off when classes are direction-defined (flip swaps them)"
    )
    crop_scales: tuple[float, ...] = Field(
        (1.0, 0.875, 0.75, 0.66),
        min_length=1,
        description="multi-scale random crop sides as fractions of the short side (TSN / mmaction2)",
    )
    epochs: int = Field(30, ge=1, description="training epochs")
    batch_size: int = Field(16, ge=1, description="items per batch")
    lr: float = Field(0.01, gt=0, description="peak SGD learning rate")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, description="SGD weight decay")
    lr_schedule: Literal["cosine", "multistep", "constant"] = Field(
        "cosine", description="decay after warm-up, stepped per iteration"
    )
    lr_milestones: tuple[int, ...] = Field(
        (), description="epochs at which multistep multiplies the LR by lr_gamma"
    )
    lr_gamma: float = Field(0.1, gt=0, description="multistep decay factor")
    warmup_epochs: float = Field(0.0, ge=0, description="linear LR warm-up from lr * warmup_factor")
    warmup_factor: float = Field(0.01, gt=0, le=1, description="LR factor at the first warm-up iteration")
    seed: int = Field(0, description="seed of initialisation, data order and augmentation")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes")
    amp: bool = Field(True, description="mixed precision (float16) and channels-last memory on CUDA")


RESUME_IGNORED_FIELDS = frozenset({"num_workers"})
"""Config fields that do not change the result: a checkpoint made with other values still resumes."""


class TeacherConfig(TrainingConfig):
    """The flow teacher (MotionFit: R(2+1)D-18 on 2-channel TV-L1 flow, 16 x 112 x 112 clips)."""

    clips_per_video: int = Field(
        4, ge=1, description="R, clips per video averaged by MotionFit's multi-clip loss (chosen here: 4)"
    )
    modality: Literal["flow", "rgb"] = Field(
        "flow",
        description="what the teacher sees: TV-L1 flow (MotionFit's motion teacher) or RGB frames (the "
        "poster's appearance teacher, an ablation); pseudo-labels come from the same input",
    )
    eval_clips_per_video: int = Field(5, ge=1, description="centre clips per validation video")
    eval_split: str = Field("val", description="target split scored after each epoch (skipped when empty)")
    epochs: int = Field(60, ge=1, description="training epochs (flow models train long from scratch)")
    batch_size: int = Field(8, ge=1, description="videos per batch (each gives R clips)")
    lr: float = Field(0.01, gt=0, description="peak SGD learning rate")
    warmup_epochs: float = Field(2.0, ge=0, description="linear LR warm-up (epochs)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the classifier")


class PseudoLabelConfig(BaseModel):
    """Pseudo-labelling of the unlabelled videos by the flow teacher (MotionFit)."""

    model_config = ConfigDict(extra="forbid")

    clips_per_video: int = Field(
        10, ge=1, description="R clips per video, evenly spaced (MotionFit labels clips, not videos)"
    )
    level: Literal["clip", "segment", "video"] = Field(
        "clip",
        description="clip: each clip its own logits (MotionFit); segment: the mean of its TSN-style segment "
        "of the video; video: the video's mean (the poster's granularity ablation)",
    )
    segments: int = Field(3, ge=1, description="segment level: equal spans per video (TSN: 3)")
    teacher_stage: str = Field(TEACHER_STAGE, description="stage whose checkpoint is the teacher")
    batch_size: int = Field(32, ge=1, description="clips per inference batch")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes")
    amp: bool = Field(True, description="float16 inference on CUDA")


class StudentConfig(TrainingConfig):
    """The RGB student (R(2+1)D-18, 16 x 112 x 112 in MotionFit, CMPL and the IDT-prior paper)."""

    objective: Literal[
        "pseudo_labels",
        "local_aggregation",
        "instance_recognition",
        "video_local_aggregation",
        "cmpl",
        "mers",
        "mars",
    ] = Field(
        "pseudo_labels",
        description="MotionFit pseudo-labels, Local Aggregation on the IDT clusters, instance recognition, "
        "Local Aggregation on k-means of the network's embeddings, CMPL, or regression of the flow "
        "teacher's features on the labelled target alone (MERS) or beside cross-entropy (MARS)",
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
        10,
        ge=1,
        description="clip keys (segments) per video: LA/CMPL draw one clip of them per visit, MERS/MARS "
        "train on every one, jittered within its segment",
    )
    # MotionFit pseudo-labels
    target_mode: TargetMode = Field("soft", description="pseudo-label targets: soft (MotionFit), hard, topk")
    target_temperature: float = Field(1.0, gt=0, description="softmax temperature of soft/top-k targets")
    target_top_k: int = Field(5, ge=1, description="classes kept by top-k targets")
    # Local Aggregation with the IDT prior
    embedding_dim: int = Field(128, ge=1, description="embedding size (Wu et al.; Zhuang et al.: 128)")
    la_temperature: float = Field(0.07, gt=0, description="softmax temperature T (0.07)")
    la_background_neighbours: int = Field(
        4096, ge=1, description="background neighbours k (4096, capped by the bank size)"
    )
    la_include_self: bool = Field(
        True,
        description="the anchor's own bank row among its close and background neighbours (Zhuang et al.); "
        "off, only other videos' rows count, so that telling videos apart by appearance no longer lowers "
        "the Local Aggregation loss",
    )
    ir_negatives: int = Field(4096, ge=1, description="negatives per sample of instance recognition")
    ir_warmup_epochs: int = Field(
        10,
        ge=0,
        description="epochs of instance recognition before Local Aggregation (Zhuang et al. warm-up)",
    )
    bank_momentum: float = Field(0.5, ge=0, lt=1, description="memory bank momentum (0.5)")
    bank_init: Literal["network", "random"] = Field(
        "network",
        description="memory bank rows at the start: the initial network's embeddings of every video, or "
        "random unit vectors; from random rows the anchor's own row alone satisfies the LA loss, and the "
        "network learns appearance instead of the clusters",
    )
    joint_space_epochs: int = Field(
        0,
        ge=0,
        description="idt_la: the last epochs, after Local Aggregation on the fixed IDT clusters, whose close "
        "neighbours come from k-means of the joint IDT + ConvNet space (each video's Fisher vector and bank "
        "row), redone every epoch (the IDT-prior paper's final tuning step); 0: off",
    )
    joint_space_weight: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="share of the ConvNet embedding in the joint space's squared distances (the Fisher "
        "vector has the rest; both parts are unit vectors)",
    )
    la_kmeans_clusters: int | None = Field(
        None,
        ge=2,
        description="video_local_aggregation: k-means clusters of the memory bank per run (None: one per "
        "40 videos, as the IDT clustering's default)",
    )
    la_kmeans_runs: int = Field(
        3, ge=1, description="video_local_aggregation: k-means runs of the bank per epoch (m; chosen here: 3)"
    )
    # CMPL
    cmpl_scheme: CmplScheme = Field("cross", description="CMPL pseudo-labelling scheme (cross)")
    cmpl_threshold: float = Field(0.95, ge=0, le=1, description="confidence threshold tau (0.95)")
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
    lmcl_temperature: float = Field(0.1, gt=0, description="InfoNCE temperature of LMCL")
    lmcl_embedding_dim: int = Field(128, ge=1, description="projection size of the LMCL heads")
    teacher_stage: str = Field(TEACHER_STAGE, description="stage of the flow teacher (LMCL, MERS, MARS)")
    # MERS / MARS
    feature_weight: float = Field(
        50.0,
        gt=0,
        description="alpha, weight of the mean squared error between the student's and the frozen flow "
        "teacher's features at the layer before the final fully-connected layer (globally pooled conv5, "
        "as in MARS), on the same frames, crop and flip; MARS adds it to cross-entropy (alpha 50, Crasto "
        "et al. 2019), MERS minimises it alone (the weight then scales its step as the LR does)",
    )

    @model_validator(mode="after")
    def _joint_space_after_warm_up(self) -> StudentConfig:
        if self.joint_space_epochs and self.joint_space_epochs > self.epochs - self.ir_warmup_epochs:
            raise ValueError(
                f"joint_space_epochs {self.joint_space_epochs} exceeds the {self.epochs} epochs less the "
                f"{self.ir_warmup_epochs} of instance-recognition warm-up"
            )
        return self


class FinetuneConfig(TrainingConfig):
    """Fine-tuning on the target (MotionFit: lr 0.1, momentum 0.9, frozen early blocks, 5 test clips)."""

    freeze_blocks: int = Field(
        1,
        ge=0,
        le=4,
        description="blocks frozen when starting from a checkpoint (MotionFit: 1 UCF101, 2 HMDB51)",
    )
    lr: float = Field(0.1, gt=0, description="SGD learning rate (MotionFit)")
    momentum: float = Field(0.9, ge=0, description="SGD momentum (MotionFit)")
    schedule: Literal["plateau", "step"] = Field(
        "plateau", description="plateau: x0.1 when the epoch loss stops improving; step: multistep milestones"
    )
    plateau_patience: int = Field(5, ge=0, description="epochs without improvement before the LR drops")
    lr_schedule: Literal["cosine", "multistep", "constant"] = Field(
        "multistep", description="per-iteration schedule of the step mode (milestones in lr_milestones)"
    )
    lr_milestones: tuple[int, ...] = Field(
        (20, 40), description="epochs where the step schedule decays x lr_gamma"
    )
    epochs: int = Field(50, ge=1, description="fine-tuning epochs")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the new classifier")
    clips_per_video: int = Field(
        4, ge=1, description="segments a training clip is drawn from (one clip/visit)"
    )
    test_clips: int = Field(5, ge=1, description="test clips per video, softmax averaged (MotionFit: 5)")
    test_split: str = Field("test", description="target split scored at the end")
    val_split: str = Field(
        "val", description="target split whose loss drives the plateau schedule if present"
    )
