"""Config sections of the data stages: where the data sets are (``data``), how videos are decoded
(``decode``) and the synthetic motion data set (``synth``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MOTION_CLASSES: tuple[str, ...] = (
    "TranslateLeft",
    "TranslateRight",
    "TranslateUp",
    "TranslateDown",
    "RotateClockwise",
    "RotateCounterClockwise",
    "ZoomIn",
    "ZoomOut",
    "CircularPath",
    "Oscillate",
)

LabelledSampling = Literal["category", "uniform"]
LABELLED_SAMPLINGS: tuple[str, ...] = get_args(LabelledSampling)


class DataConfig(BaseModel):
    """Where the target (labelled, small) and source (unlabelled, large) videos are and how to read them."""

    model_config = ConfigDict(extra="forbid")

    target_format: Literal["ucf101", "hmdb51", "csv"] = Field(
        "ucf101",
        description="Target description: UCF101 split files (classInd.txt, trainlistNN.txt, testlistNN.txt), "
        "HMDB51 split files (<class>_test_splitN.txt) or a CSV path,label,split.",
    )
    target_video_root: Path | None = Field(
        None, description="ucf101/hmdb51: folder holding <Class>/<video> files."
    )
    target_splits_dir: Path | None = Field(None, description="ucf101/hmdb51: folder holding the split files.")
    target_csv: Path | None = Field(None, description="csv: the target CSV (paths relative to its folder).")
    split: int = Field(1, ge=1, le=3, description="UCF101/HMDB51 split number (both ship splits 1-3).")
    labelled_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Fraction of target train labels kept (semi-supervised setting of MotionFit / CMPL: 0.2, "
        "0.5; 1.0 keeps all), chosen as labelled_sampling says. The other train videos keep their split with "
        "label hidden.",
    )
    labelled_sampling: LabelledSampling = Field(
        "category",
        description="How labelled_fraction picks the labelled train videos (CMPL's data partition "
        "protocols): category (that fraction of every class, at least one each) or uniform (that fraction of "
        "the whole train split at random: a class may keep none).",
    )
    labelled_seed: int = Field(0, description="Seed of the choice of labelled train videos.")
    target_train_in_source: Literal["none", "hidden", "all"] = Field(
        "none",
        description="Target train videos that also serve, labels hidden, as unlabelled source videos "
        "(D_source of the semi-supervised setting, MotionFit supp. Table 1 and CMPL): none; hidden (train "
        "minus D_MPLG: the videos whose labels labelled_fraction hides); all (the whole train set). The "
        "external source, if any, is used as well.",
    )
    source_format: Literal["kinetics", "folder", "csv", "none"] = Field(
        "none",
        description="Source description: a Kinetics CSV (label,youtube_id,time_start,time_end,split), "
        "a folder searched recursively, a CSV path[,label,split], or no source.",
    )
    source_video_root: Path | None = Field(None, description="kinetics/folder: folder holding the videos.")
    source_csv: Path | None = Field(None, description="kinetics/csv: the source CSV.")
    source_heldout_labels: Path | None = Field(
        None, description="Optional CSV path,label of source videos, used only for diagnostics."
    )
    human_boxes_dir: Path | None = Field(
        None,
        description="Optional folder of human boxes, <video file stem>.bb per video in the IDT release's "
        "format (a line per frame: its index, then x1 y1 x2 y2 score per box, in the file's pixels). The IDT "
        "stage masks them out of its camera-motion estimate when idt.human_boxes is on; a video without a "
        "file has no boxes.",
    )
    max_source_videos: int | None = Field(
        None,
        ge=1,
        description="Keep this many source videos, a uniform random choice (IDT-prior paper Fig. 4: the "
        "prior from fewer source videos); None keeps all. The others are left out of the run.",
    )
    source_seed: int = Field(0, description="Seed of the choice of max_source_videos.")
    leaks: Literal["refuse", "warn"] = Field(
        "refuse",
        description="One video file (by resolved path, or by size and the hash of its first 64 KiB) in two "
        "roles, target test and target train or the unlabelled pool: refuse the run, or warn and go on.",
    )


class DecodeConfig(BaseModel):
    """How videos become stored frames."""

    model_config = ConfigDict(extra="forbid")

    short_side: int = Field(
        128,
        gt=0,
        description="Resize so the short side has this many pixels, keeping the aspect ratio "
        "(128, i.e. 128x171 for 4:3 video, as in R(2+1)D / MotionFit preprocessing).",
    )
    frame_stride: int = Field(1, ge=1, description="Keep every n-th frame (after the frame-rate cap).")
    max_fps: float | None = Field(
        None, gt=0, description="Cap the frame rate by dropping frames evenly; None keeps the source rate."
    )
    max_frames: int | None = Field(
        None, ge=1, description="Keep at most this many frames from the start; None keeps them all."
    )
    min_frames: int = Field(
        2,
        ge=1,
        description="A video with fewer decoded frames is excluded (optical flow needs a pair); a run raises "
        "it to what its longest clip or IDT trajectory needs (motionfit.flows.preprocess.frames_needed).",
    )
    min_side: int = Field(
        32,
        ge=1,
        description="A video whose shorter side has fewer pixels is excluded: resized to short_side it would "
        "be upscaled blur (a thumbnail or a broken encode).",
    )

    @model_validator(mode="after")
    def _max_frames_reaches_min_frames(self) -> DecodeConfig:
        if self.max_frames is not None and self.max_frames < self.min_frames:
            raise ValueError(f"max_frames={self.max_frames} is below min_frames={self.min_frames}")
        return self


class SynthConfig(BaseModel):
    """Classes, sizes and difficulty of the synthetic motion data set.

    Defaults are the ``small`` scale, at which the method's effect was measured on a 2-core CPU: 10 classes,
    12 train + 10 test videos per class, 60 unlabelled source videos per class, 16 frames of 64x64 with
    objects of about 1.3 x (6-9) px moving about 1.3 px/frame over a background at 0.6 contrast, small camera
    pan, noise. With cluttered backgrounds and small (6-9 px), slow (~1 px/frame) objects, an RGB network
    trained on the source's true labels stayed at chance; 0.6 background contrast and 1.3x larger, faster
    objects raised that check to 85-92 % on validation videos.
    Ranges are ``(low, high)`` and sampled uniformly per video. The presets narrow
    ``background_colour_range``: with fully random background colours, a 3D CNN trained from scratch on
    RGB fits each video's mean colour and never picks up the motion, even with every source label.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Global seed; each video derives its own from (seed, role, index).")
    classes: list[str] = Field(
        default_factory=lambda: list(MOTION_CLASSES),
        description=f"Motion classes to generate, a subset of {', '.join(MOTION_CLASSES)}; order fixes "
        "the label indices.",
    )
    n_train_per_class: int = Field(
        12,
        ge=1,
        description="Labelled target train videos per class (6 instead of 12 cost the teacher ~15 points).",
    )
    n_test_per_class: int = Field(10, ge=1, description="Target test videos per class.")
    n_source_per_class: int = Field(
        60, ge=0, description="Unlabelled source videos per class, labels held back."
    )
    clips_per_group: int = Field(4, ge=1, description="Videos per UCF101-style group gNN (naming only).")
    n_frames: int = Field(16, ge=2, description="Frames per video.")
    frame_size_px: tuple[int, int] = Field(
        (64, 64), description="Frame (height, width) in pixels, even (the mp4v encoder needs even sides)."
    )
    fps: float = Field(25.0, gt=0, description="Frame rate written into the mp4 container (UCF101: 25).")
    object_size_px: tuple[float, float] = Field(
        (7.8, 11.7),
        description="Object diameter at mid-clip (1.3 x 6-9 px made motion learnable, see above).",
    )
    speed_px_per_frame: tuple[float, float] = Field(
        (1.1, 1.5),
        description="Object speed; for rotation the speed of its rim, for oscillation its mean speed "
        "(1.3 x ~1 px/frame, see above).",
    )
    zoom_ratio: tuple[float, float] = Field(
        (1.8, 2.4),
        description="Zoom classes: ratio of the last to the first frame's object size (or inverse).",
    )
    path_radius_px: tuple[float, float] = Field((5.0, 8.0), description="CircularPath: radius of the path.")
    oscillation_period_frames: tuple[float, float] = Field(
        (8.0, 12.0), description="Oscillate: period of the back-and-forth motion, in frames."
    )
    centre_range_fraction: float = Field(
        0.4,
        gt=0,
        le=1,
        description="Mid-clip object centres are uniform in this central fraction of the frame.",
    )
    background_contrast: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Scale of the background texture around its mean colour (x0.6, see above).",
    )
    background_colour_range: tuple[float, float] = Field(
        (0.05, 0.95),
        description="Range of the background's two colours (per channel, 0-1). Wide ranges make each video's "
        "mean colour a strong, class-blind signal that RGB networks trained from scratch lock onto before "
        "motion; a range around mid-grey keeps backgrounds varied but alike in mean.",
    )
    camera_pan_px_per_frame: float = Field(
        0.3, ge=0, description="Largest camera pan speed; direction uniform, speed uniform in [0, this]."
    )
    noise_std: float = Field(
        3.0, ge=0, description="Standard deviation of Gaussian pixel noise, in 0-255 units."
    )

    @field_validator("classes")
    @classmethod
    def _known_unique_classes(cls, classes: list[str]) -> list[str]:
        unknown = [name for name in classes if name not in MOTION_CLASSES]
        if unknown or not classes or len(set(classes)) != len(classes):
            raise ValueError(
                f"classes must be a non-empty list of distinct names from {MOTION_CLASSES}, got {classes}"
            )
        return classes

    @field_validator("frame_size_px")
    @classmethod
    def _even_frame_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if any(side < 16 or side % 2 for side in size):
            raise ValueError(
                f"frame_size_px must be even sides of at least 16 px (mp4v needs even), got {size}"
            )
        return size

    @field_validator(
        "object_size_px",
        "speed_px_per_frame",
        "zoom_ratio",
        "path_radius_px",
        "oscillation_period_frames",
        "background_colour_range",
    )
    @classmethod
    def _positive_range(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not 0 < bounds[0] <= bounds[1]:
            raise ValueError(f"a range must be (low, high) with 0 < low <= high, got {bounds}")
        return bounds

    @model_validator(mode="after")
    def _zoom_at_least_one(self) -> SynthConfig:
        if self.zoom_ratio[0] < 1:
            raise ValueError(f"zoom_ratio must be >= 1 (zoom out uses its inverse), got {self.zoom_ratio}")
        return self

    @field_validator("background_colour_range")
    @classmethod
    def _colours_at_most_one(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if bounds[1] > 1:
            raise ValueError(f"background_colour_range must lie in (0, 1], got {bounds}")
        return bounds
