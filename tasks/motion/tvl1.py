"""TV-L1 optical flow (Zach, Pock & Bischof 2007; OpenCV's DualTVL1) between consecutive stored frames.

Flow is clipped to ``+-flow_bound`` (20 px, mmaction2/denseflow) and quantised to uint8 by rounding
``(flow + bound) * 255 / (2 * bound)``; rounding, not truncation, because truncation biases the flow by about
-0.08 px (FACTS.md). Readers normalise the stored bytes with mean = std = 128 or call :func:`dequantize_flow`.

Threads: OpenCV's thread count (``cv2.setNumThreads``) is one process-wide setting, not a per-thread one.
Two OpenCV threads speed TV-L1 up by at most 1.8x, while separate workers scale linearly, so the stage runs
N worker threads (or processes) with ``threads_per_worker`` (1) OpenCV threads each: :func:`compute_flows`
applies the setting in whichever process runs the batch (a Prefect thread, a process-pool worker or a Dask
worker) before computing. Concurrent batches in one process share the setting, so they must agree on it,
which they do when they share a :class:`FlowConfig`. OpenCV releases the GIL inside ``calc``, so threads
scale.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from motionfit.storage.layout import RunLayout
from motionfit.tasks.per_video import VideoOutcome, inputs_key, map_videos

_opencv_threads_lock = threading.Lock()


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
    threads_per_worker: int = Field(
        1,
        ge=1,
        description="OpenCV threads (process-wide) while computing; run N workers x 1 thread (FACTS.md).",
    )


def create_tvl1(config: FlowConfig) -> cv2.optflow.DualTVL1OpticalFlow:
    """An OpenCV DualTVL1 solver with the parameters of ``config`` (not thread-safe: one per worker)."""
    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=config.tau,
        lambda_=config.lambda_,
        theta=config.theta,
        nscales=config.n_scales,
        warps=config.warps,
        epsilon=config.epsilon,
        innnerIterations=config.inner_iterations,
        outerIterations=config.outer_iterations,
        scaleStep=config.scale_step,
        gamma=config.gamma,
        medianFiltering=config.median_filtering,
        useInitialFlow=config.use_initial_flow,
    )


def use_opencv_threads(n_threads: int) -> None:
    """Set OpenCV's process-wide thread count to ``n_threads`` unless it already is (thread-safe)."""
    with _opencv_threads_lock:
        if cv2.getNumThreads() != n_threads:
            cv2.setNumThreads(n_threads)


def to_grayscale(frames: np.ndarray) -> np.ndarray:
    """``[T, H, W, 3]`` RGB or ``[T, H, W]`` gray ``uint8`` frames as ``[T, H, W] uint8`` gray."""
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(
            f"frames must be [T, H, W, 3] RGB or [T, H, W] gray uint8, got {frames.dtype} {frames.shape}"
        )
    if frames.ndim == 3:
        return frames
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames])


def compute_tvl1_flow(frames: np.ndarray, config: FlowConfig) -> np.ndarray:
    """TV-L1 flow from each frame to the next: ``[T, H, W, 3]`` or ``[T, H, W]`` uint8 -> ``[T-1, H, W, 2]``
    float32 ``(dx, dy)`` in pixels of the input frames."""
    gray = to_grayscale(frames)
    if gray.shape[0] < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {gray.shape[0]}")
    tvl1 = create_tvl1(config)
    flow = np.empty((gray.shape[0] - 1, *gray.shape[1:], 2), dtype=np.float32)
    for index in range(gray.shape[0] - 1):
        flow[index] = tvl1.calc(gray[index], gray[index + 1], None)
    return flow


def quantize_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """Clip float flow to ``+-bound`` and map it linearly to ``0..255`` with rounding -> uint8, same shape.

    ``-bound`` -> 0, ``+bound`` -> 255; inside the bound the error after :func:`dequantize_flow` is at most
    half a step, ``bound / 255``.
    """
    scaled = (np.clip(flow, -bound, bound, dtype=np.float32) + bound) * np.float32(255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantize_flow(quantized: np.ndarray, bound: float) -> np.ndarray:
    """Inverse of :func:`quantize_flow`: uint8 -> float32 flow in ``[-bound, bound]`` px, same shape."""
    return quantized.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)


def compute_flows(video_ids: list[str], layout: RunLayout, config: FlowConfig) -> list[VideoOutcome]:
    """Quantised TV-L1 flow for a batch of videos, from ``frames.zarr`` into ``flow.zarr`` of ``layout``.

    Each stored array is ``[T-1, H, W, 2] uint8`` with attribute ``flow_bound``. Videos already committed from
    the same frames and config are skipped; a video whose frames are missing or whose flow fails is recorded
    as failed and the batch goes on.
    Sets OpenCV's process-wide thread count to ``config.threads_per_worker`` first (see the module docstring).
    """
    use_opencv_threads(config.threads_per_worker)
    frames_store = layout.store("frames")
    flow_store = layout.store("flow")

    def process(video_id: str) -> None:
        flow = compute_tvl1_flow(frames_store.read(video_id), config)
        flow_store.write(
            video_id, quantize_flow(flow, config.flow_bound), attrs={"flow_bound": config.flow_bound}
        )

    settings = config.model_dump(mode="json", by_alias=True, exclude={"threads_per_worker"})

    def key_of(video_id: str) -> str:
        frames = frames_store.markers
        return inputs_key(
            settings, frames.committed_info(video_id)["time"] if frames.is_committed(video_id) else None
        )

    return map_videos(video_ids, flow_store.markers, process, key_of)
