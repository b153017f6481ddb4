"""Pooled conv5 features of a trained video network, for retrieval and few-shot linear probes, and its
forward time per clip for the inference-cost table.

:func:`video_features` reads a run's stored videos through the clip data set (evenly spaced centre crops,
stable ``(video_id, clip_index, start_frame)`` keys) and averages the features of 10 clips per video, the
retrieval protocol of VCOP, MotionFit and CMPL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from motionfit.storage.layout import RunLayout
from motionfit.tasks.training.loop import video_outputs

RETRIEVAL_CLIPS = 10
"""Clips per video whose features are averaged for retrieval (Xu et al. 2019, VCOP protocol)."""


def _pooled_features(network: nn.Module, clips: Tensor) -> Tensor:
    return network.features(clips)


def video_features(
    model: nn.Module,
    layout: RunLayout,
    video_ids: Sequence[str],
    modality: str = "rgb",
    n_clips: int = RETRIEVAL_CLIPS,
    clip_length: int = 16,
    crop_size: int = 112,
    frame_stride: int = 1,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> tuple[list[str], np.ndarray]:
    """Pooled conv5 features averaged over ``n_clips`` evenly spaced centre-cropped clips per video.

    Returns ``(video_ids, features [V, D] float32)``; videos missing from the modality's store are left out
    (the clip data set logs them), the others keep their order.
    """
    return video_outputs(
        model,
        layout,
        video_ids,
        modality,
        n_clips,
        clip_length,
        crop_size,
        _pooled_features,
        frame_stride,
        batch_size,
        device,
        num_workers,
    )


@torch.inference_mode()
def forward_seconds_per_clip(
    model: nn.Module,
    input_shape: tuple[int, int, int, int] = (3, 16, 112, 112),
    repeats: int = 3,
    device: str | torch.device = "cpu",
) -> float:
    """Median wall-clock seconds of one forward pass on a single clip ``input_shape`` = (C, T, H, W), after
    one warm-up pass (the network's share of the inference-cost table, beside ptflops' GMac)."""
    if repeats < 1:
        raise ValueError(f"repeats must be positive, got {repeats}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    clip = torch.zeros((1, *input_shape), device=device)
    seconds = []
    try:
        for _ in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(clip)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return float(np.median(seconds[1:]))
