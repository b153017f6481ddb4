"""Config section of the IDT stage (``idt``): the parameters of the authors' 2013 release."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from motionfit.tasks.idt.columns import DescriptorLayout, IdtColumns


class IdtConfig(BaseModel):
    """Improved Dense Trajectories parameters; defaults are those of the authors' 2013 release."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["reference", "pipeline"] = Field(
        "reference",
        description="Flow for tracking and descriptors: 'reference' computes the release's Farnebäck flow "
        "per pyramid level; 'pipeline' reuses precomputed full-resolution flow (the stored TV-L1).",
    )
    dtype: Literal["float32", "float16"] = Field(
        "float32", description="Storage type of the rows in idt.zarr."
    )
    track_length: int = Field(15, ge=2, description="Frames per trajectory L (Wang & Schmid 2013).")
    min_distance: int = Field(5, ge=1, description="Dense sampling step W in pixels (Wang & Schmid 2013).")
    init_gap: int = Field(
        1,
        ge=1,
        description="Re-sample empty grid cells every this many frames (release: 1, the only value "
        "its counter honours).",
    )
    quality: float = Field(
        0.001, gt=0, description="Sampling threshold: fraction of the largest min-eigenvalue (release)."
    )
    max_scales: int = Field(8, ge=1, description="Spatial scales at most (release: scale_num 8).")
    scale_stride: float = Field(math.sqrt(2), gt=1, description="Factor between spatial scales (release).")
    patch_size: int = Field(32, ge=2, description="Descriptor patch N in pixels (Wang & Schmid 2013).")
    nxy_cell: int = Field(2, ge=1, description="Spatial cells per patch side n_sigma (Wang & Schmid 2013).")
    nt_cell: int = Field(3, ge=1, description="Temporal cells n_tau per trajectory (Wang & Schmid 2013).")
    orientation_bins: int = Field(8, ge=2, description="Orientation bins of HOG/MBH; HOF adds a zero bin.")
    epsilon: float = Field(
        0.05, ge=0, description="Added to every histogram bin before normalising (release)."
    )
    min_flow: float = Field(0.4, ge=0, description="HOF zero bin: flow magnitude at most this, px (release).")
    min_var: float = Field(
        math.sqrt(3), ge=0, description="Static track: both position std below this, px (release)."
    )
    max_var: float = Field(50.0, gt=0, description="Erratic track: a position std above this, px (release).")
    max_dis: float = Field(20.0, gt=0, description="Largest allowed single step, px (release).")
    max_dis_ratio: float = Field(
        0.7, gt=0, description="...when that step is also above this fraction of the track length (release)."
    )
    poly_n: int = Field(7, ge=1, description="Farnebäck polynomial expansion half-width (release).")
    poly_sigma: float = Field(1.5, gt=0, description="Farnebäck applicability sigma (release).")
    winsize: int = Field(10, ge=2, description="Farnebäck averaging window (release).")
    iterations: int = Field(2, ge=1, description="Farnebäck iterations per level (release).")
    median_ksize: Literal[1, 3, 5] = Field(5, description="Median filter of each flow level (release: 5).")
    camera_motion: bool = Field(True, description="Compensate camera motion with a homography (IDT).")
    human_boxes: bool = Field(
        False,
        description="Mask the human boxes of data.human_boxes_dir out of the camera-motion estimate (the "
        "release's bounding-box option); the IDT-prior paper reports 72.6 % with them and 72.8 % without.",
    )
    keypoint_detector: Literal["sift", "orb"] = Field(
        "sift", description="Keypoints for the homography (SURF in the paper; the reference build used SIFT)."
    )
    match_window_px: float = Field(
        25.0, gt=0, description="Keypoints match only within this offset (release)."
    )
    max_corners: int = Field(1000, ge=0, description="Flow-tracked corners for the homography (release).")
    corner_quality: float = Field(0.001, gt=0, description="Quality level of those corners (release).")
    corner_min_distance_px: float = Field(3.0, ge=0, description="Spacing of those corners (release).")
    ransac_threshold_px: float = Field(1.0, gt=0, description="RANSAC reprojection threshold (release).")
    min_matches: int = Field(50, ge=4, description="Homography used only with more matches (release).")
    min_inliers: int = Field(25, ge=0, description="...and more RANSAC inliers than this (release).")
    warp_margin_px: int = Field(5, ge=0, description="Warped pixels this close to the border keep frame 1.")
    min_camera_displacement: float = Field(
        1.0,
        ge=0,
        description="Drop a track whose largest compensated step is at most this, px (IsCameraMotion).",
    )

    @model_validator(mode="after")
    def _check_cells(self) -> IdtConfig:
        if self.patch_size % self.nxy_cell:
            raise ValueError(f"patch_size {self.patch_size} is not a multiple of nxy_cell {self.nxy_cell}")
        if self.track_length < self.nt_cell:
            raise ValueError(f"track_length {self.track_length} is shorter than nt_cell {self.nt_cell}")
        return self

    def layout(self) -> DescriptorLayout:
        return DescriptorLayout(
            orientation_bins=self.orientation_bins,
            patch_size=self.patch_size,
            nxy_cell=self.nxy_cell,
            nt_cell=self.nt_cell,
            track_length=self.track_length,
        )

    def columns(self) -> IdtColumns:
        """Column layout of the output rows (the reference's 436 columns with the defaults)."""
        hog, hof, mbhx, mbhy = self.layout().type_dims
        return IdtColumns(self.track_length, (hog, hof, mbhx, mbhy))
