"""Spatial transforms of a clip, the same for all its frames, on ``[T, C, H, W] float32`` tensors of raw
(0-255) values: mmaction2's multi-scale random crop, the evaluation centre crop, a horizontal flip (which
negates the flow's x component), CMPL's strongly augmented view (RandAugment-style ops and Cutout with one set
of parameters per clip) and the normalisation to the network's ``[C, T, H, W]`` input: RGB with the Kinetics
mean and standard deviation of torchvision's video models, flow as mmaction2 does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from motionfit.tasks.motion.codec import negate_quantized, normalise_flow

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
"""RGB mean of torchvision's Kinetics-400 video models (on [0, 1] pixel values)."""
KINETICS_STD = (0.22803, 0.22145, 0.216989)
"""RGB standard deviation of torchvision's Kinetics-400 video models."""

MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
"""Crop sides as fractions of the short side (TSN / mmaction2 ``MultiScaleCrop``)."""


@dataclass(frozen=True)
class ClipTransform:
    """Spatial processing of a clip (the same for all its frames).

    ``train``: multi-scale random crop (sides from ``scales`` x short side, aspect ratio within one scale
    step, random position) and optional ``horizontal_flip`` (p = 0.5); otherwise a centre square of
    ``eval_crop_fraction`` x short side (112 of 128 by default). Both are resized to ``crop_size``.
    ``strong_view`` adds a second, strongly augmented RGB view: its own crop and flip, then
    ``randaugment_ops`` ops of random magnitude in [1, ``randaugment_magnitude``] (of 10) and a Cutout square
    of up to ``cutout_fraction`` of the side (FixMatch's RandAugment as used by CMPL).
    """

    crop_size: int = 112
    train: bool = False
    scales: tuple[float, ...] = MULTI_SCALE_CROP_SCALES
    eval_crop_fraction: float = 0.875
    horizontal_flip: bool = False
    strong_view: bool = False
    randaugment_ops: int = 2
    randaugment_magnitude: int = 10
    cutout_fraction: float = 0.5


def multi_scale_box(height: int, width: int, scales: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A random crop box ``[top, left, box_height, box_width]`` (fractions of the frame) whose sides are
    two scales at most one step apart, times the short side (mmaction2 ``MultiScaleCrop``)."""
    short = min(height, width)
    sides = [max(1, round(short * s)) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1]
    box_h, box_w = pairs[rng.integers(len(pairs))]
    top = rng.integers(height - box_h + 1)
    left = rng.integers(width - box_w + 1)
    return np.array([top / height, left / width, box_h / height, box_w / width])


def centre_box(height: int, width: int, fraction: float) -> np.ndarray:
    """The centred square of side ``fraction`` x short side, as fractions ``[top, left, h, w]``."""
    side = max(1, round(min(height, width) * fraction))
    return np.array([(height - side) // 2 / height, (width - side) // 2 / width, side / height, side / width])


def crop_resize(frames: torch.Tensor, box: np.ndarray, size: int) -> torch.Tensor:
    """Crop the fractional ``box`` out of ``frames`` ``[T, C, H, W] float32`` and resize to ``[T, C, size,
    size]`` (bilinear, antialiased)."""
    height, width = frames.shape[-2:]
    top, left = round(box[0] * height), round(box[1] * width)
    box_h, box_w = max(1, round(box[2] * height)), max(1, round(box[3] * width))
    crop = frames[..., top : top + box_h, left : left + box_w]
    if crop.shape[-2:] == (size, size):
        return crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def horizontal_flip(frames: torch.Tensor, modality: str) -> torch.Tensor:
    """Mirror ``frames`` ``[T, C, H, W]`` (raw 0-255 values) left-right; for flow also negate the x component.

    The flow's x component is negated on its stored bytes
    (:func:`~motionfit.tasks.motion.codec.negate_quantized`).
    """
    flipped = frames.flip(-1)
    if modality == "flow":
        flipped = torch.cat([negate_quantized(flipped[:, :1]), flipped[:, 1:]], dim=1)
    return flipped


def _tall(frames: torch.Tensor) -> torch.Tensor:
    """``[T, C, H, W]`` -> ``[C, T*H, W]``: one image whose statistics span the whole clip."""
    t, c, h, w = frames.shape
    return frames.permute(1, 0, 2, 3).reshape(c, t * h, w)


def _untall(image: torch.Tensor, n_frames: int) -> torch.Tensor:
    c, th, w = image.shape
    return image.reshape(c, n_frames, th // n_frames, w).permute(1, 0, 2, 3)


def _signed(magnitude: float, rng: np.random.Generator) -> float:
    return magnitude if rng.random() < 0.5 else -magnitude


def _randaugment_op(frames: torch.Tensor, op: str, level: float, rng: np.random.Generator) -> torch.Tensor:
    """One RandAugment op at ``level`` in (0, 1] on ``frames`` ``[T, 3, S, S] uint8``; ops that use image
    statistics (autocontrast, equalize, contrast) use the whole clip's, so every frame changes alike."""
    n_frames, size = frames.shape[0], frames.shape[-1]
    if op == "identity":
        return frames
    if op in ("autocontrast", "equalize", "contrast"):
        tall = _tall(frames)
        if op == "autocontrast":
            tall = TF.autocontrast(tall)
        elif op == "equalize":
            tall = TF.equalize(tall)
        else:
            tall = TF.adjust_contrast(tall, 1.0 + _signed(0.9 * level, rng))
        return _untall(tall, n_frames).contiguous()
    if op == "brightness":
        return TF.adjust_brightness(frames, 1.0 + _signed(0.9 * level, rng))
    if op == "color":
        return TF.adjust_saturation(frames, 1.0 + _signed(0.9 * level, rng))
    if op == "sharpness":
        return TF.adjust_sharpness(frames, 1.0 + _signed(0.9 * level, rng))
    if op == "posterize":
        return TF.posterize(frames, bits=8 - round(4 * level))
    if op == "solarize":
        return TF.solarize(frames, threshold=255.0 * (1.0 - level))
    fill = [128.0, 128.0, 128.0]
    if op == "rotate":
        return TF.rotate(frames, angle=_signed(30.0 * level, rng), fill=fill)
    if op in ("shear_x", "shear_y"):
        shear = float(np.degrees(np.arctan(_signed(0.3 * level, rng))))
        shears = [shear, 0.0] if op == "shear_x" else [0.0, shear]
        return TF.affine(frames, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=shears, fill=fill)
    if op in ("translate_x", "translate_y"):
        shift = _signed(0.3 * level * size, rng)
        shifts = [shift, 0.0] if op == "translate_x" else [0.0, shift]
        return TF.affine(frames, angle=0.0, translate=shifts, scale=1.0, shear=[0.0, 0.0], fill=fill)
    raise ValueError(f"unknown RandAugment op {op!r}")


RANDAUGMENT_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)


def randaugment_clip(
    frames: torch.Tensor, rng: np.random.Generator, n_ops: int, max_magnitude: int, cutout_fraction: float
) -> torch.Tensor:
    """RandAugment + Cutout with one set of parameters for all frames: ``[T, 3, S, S] uint8`` -> same."""
    for op in rng.choice(RANDAUGMENT_OPS, size=n_ops):
        level = rng.integers(1, max_magnitude + 1) / 10.0
        frames = _randaugment_op(frames, str(op), level, rng)
    if cutout_fraction > 0:
        size = frames.shape[-1]
        half = round(rng.uniform(0.0, cutout_fraction) * size) // 2
        top, left = rng.integers(size), rng.integers(size)
        frames = frames.clone()
        frames[..., max(0, top - half) : top + half, max(0, left - half) : left + half] = 128
    return frames


def normalise(frames: torch.Tensor, modality: str) -> torch.Tensor:
    """Raw ``[T, C, H, W]`` values (0-255) to the network's ``[C, T, H, W] float32`` input."""
    if modality == "rgb":
        mean = torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(KINETICS_STD).view(1, 3, 1, 1) * 255.0
        frames = (frames - mean) / std
    else:
        frames = normalise_flow(frames)
    return frames.permute(1, 0, 2, 3).contiguous()
