"""Config section of the optical-flow stage (``flow``): TV-L1 parameters and the stored flow's bound."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FlowConfig(BaseModel):
    """TV-L1 parameters (OpenCV DualTVL1 defaults, as in MotionFit's and mmaction2's flow) and storage."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    tau: float = Field(0.25, gt=0, description="Time step of the numerical scheme (OpenCV DualTVL1 default).")
    lambda_: float = Field(
        0.15,
        gt=0,
        alias="lambda",
        description="Weight of the data term; smaller gives smoother flow (OpenCV DualTVL1 default).",
    )
    theta: float = Field(
        0.3, gt=0, description="Tightness of the coupling variable (OpenCV DualTVL1 default)."
    )
    gamma: float = Field(0.0, ge=0, description="Weight of the illumination term (OpenCV DualTVL1 default).")
    n_scales: int = Field(5, ge=1, description="Pyramid levels (OpenCV DualTVL1 default).")
    warps: int = Field(5, ge=1, description="Warpings per pyramid level (OpenCV DualTVL1 default).")
    epsilon: float = Field(0.01, gt=0, description="Stopping threshold per warp (OpenCV DualTVL1 default).")
    inner_iterations: int = Field(
        30, ge=1, description="Inner iterations per warp (OpenCV DualTVL1 default)."
    )
    outer_iterations: int = Field(
        10, ge=1, description="Outer iterations per warp (OpenCV DualTVL1 default)."
    )
    scale_step: float = Field(
        0.8, gt=0, lt=1, description="Downscaling factor between pyramid levels (OpenCV DualTVL1 default)."
    )
    median_filtering: int = Field(
        5, ge=1, description="Median filter size applied to the flow between warps (OpenCV DualTVL1 default)."
    )
    use_initial_flow: bool = Field(
        False, description="Start from the flow passed in rather than zero (OpenCV DualTVL1 default)."
    )
    flow_bound: float = Field(
        20.0,
        gt=0,
        description="Clip flow to +-flow_bound px before uint8 quantisation (mmaction2/denseflow).",
    )
    backend: Literal["auto", "opencv", "torch"] = Field(
        "auto",
        description="Who computes TV-L1: OpenCV's DualTVL1 on the CPU, or the batched PyTorch port of it "
        "(tvl1_torch); auto takes torch where CUDA is present and OpenCV otherwise.",
    )
    device: str | None = Field(
        None, description="Torch device of the torch backend (cuda, cuda:1, cpu); default cuda when present."
    )
    batch_size: int = Field(
        32, ge=1, description="Frame pairs per call of the torch backend: its memory grows linearly with it."
    )
    threads_per_worker: int = Field(
        1,
        ge=1,
        description="OpenCV (or, for the torch backend on the CPU, torch) threads (process-wide) while "
        "computing: two OpenCV threads speed TV-L1 up by at most "
        "1.8x while separate workers scale linearly, so run N workers x 1 thread.",
    )
