"""Model complexity (multiply-accumulates and parameters) counted with ptflops."""

import copy

import torch
from ptflops import get_model_complexity_info
from torch import nn


def count_complexity(model: nn.Module, input_shape: tuple[int, ...] = (3, 16, 112, 112)) -> tuple[float, int]:
    """GMACs of one forward pass on a single clip and the parameter count, as ptflops reports them.

    Args:
        model: any module whose ``forward`` takes ``[1, *input_shape]``; it is copied, so its hooks and
            training mode are untouched.
        input_shape: one clip without batch dimension, ``(C, T, H, W)``.

    Returns:
        ``(gmacs, params)``: 1e9 multiply-accumulates (ptflops' "GMac") and number of parameters.
    """
    if len(input_shape) < 1 or any(n < 1 for n in input_shape):
        raise ValueError(f"input_shape must be positive sizes such as (C, T, H, W), got {input_shape}")
    reference = next(model.parameters(), torch.empty(0))
    macs, params = get_model_complexity_info(
        copy.deepcopy(model),
        tuple(input_shape),
        as_strings=False,
        print_per_layer_stat=False,
        # zeros, not ptflops' uninitialised tensor: stray NaNs or denormals can slow the pass many times
        input_constructor=lambda shape: torch.zeros(
            (1, *shape), dtype=reference.dtype, device=reference.device
        ),
        backend="pytorch",
    )
    if macs is None or params is None:
        raise RuntimeError(
            f"ptflops could not run {type(model).__name__} on an input of shape (1, *{tuple(input_shape)})"
        )
    return macs / 1e9, int(params)
