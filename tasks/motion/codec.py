"""The uint8 flow contract of ``flow.zarr``: every reader and writer of stored optical flow goes through here.

Flow in pixels is clipped to ``+-bound`` (the flow stage's ``flow_bound``: 20 px as in mmaction2 and
denseflow) and mapped linearly to ``0..255`` with rounding: rounding costs 0.061 px of end-point error at
bound 20, truncation 0.114 px and a bias of -0.078 px (measured on real 320x240 frames with OpenCV's TV-L1).
Each stored array records its bound in the attribute ``flow_bound``; readers take it from there
(:func:`stored_flow_bound`), never from the current config. Networks see the bytes normalised as mmaction2
does, ``(q - 128) / 128``; a horizontal flip of a clip negates the flow's x component, which on the bytes is
``255 - q``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

FLOW_BOUND_ATTR = "flow_bound"
"""Attribute of every stored flow array (and its commit record) holding its bound in pixels."""
FLOW_MEAN = 128.0
FLOW_STD = 128.0
"""mmaction2's normalisation of uint8-quantised flow: ``(q - 128) / 128``."""

Array = TypeVar("Array")


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


def stored_flow_bound(attrs: Mapping[str, Any], video_id: str = "") -> float:
    """The bound a stored flow array was quantised with, from its attributes (``flow_bound``)."""
    if FLOW_BOUND_ATTR not in attrs:
        raise KeyError(f"stored flow of video {video_id!r} has no {FLOW_BOUND_ATTR!r} attribute")
    return float(attrs[FLOW_BOUND_ATTR])


def normalise_flow(quantized: Array) -> Array:
    """Stored bytes (uint8 values as numpy or torch floats) -> the network's input ``(q - 128) / 128``."""
    return (quantized - FLOW_MEAN) / FLOW_STD


def negate_quantized(quantized: Array) -> Array:
    """The stored value of ``-f`` given the stored value ``q`` of ``f`` (``255 - q``: the map is symmetric
    around 127.5), for numpy or torch values."""
    return 255.0 - quantized
