"""Data-parallel training over processes: the process group, DistributedDataParallel steps with synchronised
batch norms, and metrics averaged over the ranks.

A stage trained on W processes (``torchrun``'s environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``; see :mod:`motionfit.tasks.training.launch`) computes what one process would:
each rank takes an equal contiguous share of every global batch in the single-process order
(:class:`~motionfit.tasks.data.clips.RankBatchSampler`), batch norms normalise with the global batch's
statistics, and DDP averages the ranks' gradients of their mean losses, which is the gradient of the global
batch's mean loss. Rank 0 alone writes checkpoints, tables and artifacts. Without a process group (or with
one rank) every function here is the single-process identity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

Step = Callable[[dict[str, Any]], Any]


def world_size() -> int:
    """Processes training together (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes the stage's outputs (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if world_size() > 1:
        dist.barrier()


def init_from_env(device: str | torch.device) -> torch.device:
    """Join the process group described by the ``torchrun`` environment: NCCL on CUDA (this process's GPU is
    ``cuda:LOCAL_RANK``), gloo on the CPU. Returns this rank's device."""
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device(device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible, "
                f"{os.environ['LOCAL_WORLD_SIZE']} processes on this node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def destroy() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(values: Mapping[str, float | Tensor], device: torch.device) -> dict[str, float]:
    """``values`` averaged over the ranks (one all-reduce), as floats."""
    names = list(values)
    if world_size() == 1:
        return {name: float(values[name]) for name in names}
    stacked = torch.tensor([float(values[name]) for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    return dict(zip(names, (stacked / world_size()).tolist(), strict=True))


def sum_over_ranks(value: int, device: torch.device) -> int:
    """``value`` summed over the ranks."""
    if world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return int(total.item())


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks whose backward sums the gradients over the ranks too."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm(_BatchNorm):
    """Batch norm over the whole batch of every rank for the CPU (torch's SyncBatchNorm runs on accelerators
    only): the mean and the variance are two differentiable all-reduces of per-channel sums. Eval mode, and
    training without a process group, is plain batch norm."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions [N, C, ...], got {input.dim()}")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = input.new_tensor([input.numel() // input.shape[1]])
        totals = _AllReduceSum.apply(torch.cat([input.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = input - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * n / (n - 1), momentum)
        output = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


def sync_batch_norms(model: nn.Module, device: torch.device) -> None:
    """Replace, in place, every batch norm below ``model`` by a synchronised one (torch's SyncBatchNorm on
    CUDA, :class:`GlooSyncBatchNorm` on the CPU) sharing its parameters and buffers, so an optimiser built
    before still holds them and state-dict keys do not change."""
    synced = nn.SyncBatchNorm if device.type == "cuda" else GlooSyncBatchNorm
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if not isinstance(child, _BatchNorm) or isinstance(child, synced):
                continue
            norm = synced(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            if child.affine:
                norm.weight, norm.bias = child.weight, child.bias
            if child.track_running_stats:
                norm.running_mean, norm.running_var = child.running_mean, child.running_var
                norm.num_batches_tracked = child.num_batches_tracked
            norm.train(child.training)
            setattr(parent, name, norm)


class _StepModule(nn.Module):
    """``step_fn(batch)`` as the forward of a module holding ``model``, for DDP to wrap."""

    def __init__(self, model: nn.Module, step_fn: Step) -> None:
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.step_fn(batch)


def data_parallel(model: nn.Module, step_fn: Step, device: torch.device) -> Step:
    """``step_fn`` (a training step on ``model``'s parameters) run through DistributedDataParallel, with
    ``model``'s batch norms synchronised, when several ranks train; ``step_fn`` itself otherwise. Call it once
    per stage, after building the optimiser and before the first step."""
    if world_size() == 1:
        return step_fn
    sync_batch_norms(model, device)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_StepModule(model, step_fn), device_ids=device_ids)
