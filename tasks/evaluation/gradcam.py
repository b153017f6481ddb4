"""Grad-CAM (Selvaraju et al. 2017) for video networks: where in space and time the evidence for a class lies.

The class score's gradient with respect to the conv5 feature map ``A`` ``[B, D, T', H', W']`` is averaged over
``(T', H', W')`` to weigh each channel; ``ReLU(sum_d w_d A_d)`` is upsampled trilinearly over the whole clip
and scaled to [0, 1] per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GradCam:
    """``heatmaps`` ``[B, T, H, W] float32`` in [0, 1]; ``classes`` ``[B] int64`` explained classes;
    ``probabilities`` ``[B] float32`` their softmax probabilities."""

    heatmaps: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray


def grad_cam(
    model: nn.Module,
    clips: Tensor,
    target_classes: Tensor | None = None,
    target_layer: nn.Module | None = None,
) -> GradCam:
    """Grad-CAM of ``clips`` ``[B, C, T, H, W] float32`` for ``target_classes`` ``[B]`` (default: predicted).

    ``target_layer`` is the module whose output is the feature map (default ``model.backbone``, whose output
    is ``VideoNet.feature_map``). The model runs in eval mode; its parameters get no gradients.
    """
    if clips.ndim != 5:
        raise ValueError(f"clips has shape {tuple(clips.shape)}; expected [B, C, T, H, W]")
    layer = model.backbone if target_layer is None else target_layer
    captured: dict[str, Tensor] = {}

    def capture(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        captured["feature_map"] = output.detach().requires_grad_(True)
        return captured["feature_map"]

    was_training = model.training
    model.eval()
    handle = layer.register_forward_hook(capture)
    try:
        with torch.enable_grad():
            logits = model(clips)
            if "feature_map" not in captured:
                raise RuntimeError(
                    f"target layer {type(layer).__name__} did not run in the model's forward pass"
                )
            classes = (
                logits.argmax(dim=1) if target_classes is None else target_classes.to(logits.device).long()
            )
            if classes.shape != (clips.shape[0],):
                raise ValueError(
                    f"target_classes has shape {tuple(classes.shape)}; expected [{clips.shape[0]}]"
                )
            scores = logits.gather(1, classes[:, None]).sum()
            (gradients,) = torch.autograd.grad(scores, captured["feature_map"])
    finally:
        handle.remove()
        model.train(was_training)
    feature_map = captured["feature_map"].detach()
    weights = gradients.mean(dim=(2, 3, 4), keepdim=True)
    cam = F.relu((weights * feature_map).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(clips.shape[2:]), mode="trilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None, None]
    probabilities = logits.detach().softmax(dim=1).gather(1, classes[:, None])[:, 0]
    return GradCam(
        heatmaps=(cam / peak).cpu().numpy().astype(np.float32),
        classes=classes.cpu().numpy().astype(np.int64),
        probabilities=probabilities.cpu().numpy().astype(np.float32),
    )


def overlay_heatmap(
    frames: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a Grad-CAM ``heatmap`` ``[T', H', W']`` in [0, 1] over ``frames`` ``[T, H, W, 3] uint8``.

    The heat map is resampled (trilinear) to the frames' ``[T, H, W]``, so the frames may be the stored frames
    of the clip at storage resolution as long as they show the same field of view. Returns ``[T, H, W, 3]``
    uint8.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames has shape {frames.shape} and dtype {frames.dtype}; expected [T, H, W, 3] uint8"
        )
    if heatmap.ndim != 3:
        raise ValueError(f"heatmap has shape {heatmap.shape}; expected [T, H, W]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    resized = F.interpolate(
        torch.as_tensor(heatmap, dtype=torch.float32)[None, None],
        size=frames.shape[:3],
        mode="trilinear",
        align_corners=False,
    )[0, 0].clamp(0.0, 1.0)
    colours = matplotlib.colormaps[colormap](resized.numpy())[..., :3]
    blended = (1.0 - alpha) * frames.astype(np.float32) / 255.0 + alpha * colours
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
