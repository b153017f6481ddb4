"""The shared training loop: seeding, per-iteration LR schedules, AMP, checkpoints and exact resumption.

Written in the style of torchvision's video classification reference: :func:`train_one_epoch` and
:func:`evaluate` are plain functions, the LR scheduler steps every iteration (linear warm-up, then cosine or
multi-step decay), and a checkpoint is one dict ``{model, optimizer, lr_scheduler, scaler, epoch, config,
rng_state, ...}``. :func:`fit` drives the epochs of a stage: it writes that dict atomically (through fsspec)
to ``<run>/checkpoints/<stage>/last.pt`` after every epoch, together with the metrics history
(``history.parquet``), and a retried stage continues from it. Resumption is exact: the data order and
augmentation depend only on ``(seed, epoch, index)`` (see :mod:`motionfit.tasks.data.clips`) and the python,
numpy and torch generators are saved and restored, so an interrupted and resumed run ends with the same
weights as an uninterrupted one. Checkpoints hold only tensors and plain types and load with
``torch.load(..., weights_only=True)``.

On CUDA the loop uses automatic mixed precision (float16 with a gradient scaler) and channels-last memory;
on the CPU it runs in float32.
"""

from __future__ import annotations

import io
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn

from motionfit.models.video_net import VideoNet, build_model
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table, table_exists, write_table
from motionfit.tasks.data.clips import ClipDataset, ClipLoader, clip_loader, video_clip_keys, video_means
from motionfit.tasks.data.transforms import ClipTransform
from motionfit.tasks.training import distributed
from motionfit.tasks.training.config import RESUME_IGNORED_FIELDS, TrainingConfig

logger = logging.getLogger(__name__)


EpochCallback = Callable[[dict[str, Any]], None]


def clip_transform(config: TrainingConfig, train: bool = True, **options: Any) -> ClipTransform:
    """The spatial processing of ``config``'s's clips: training augmentation (multi-scale crop, optional
    flip) or, with ``train`` False, the evaluation centre crop; ``options`` go to ClipTransform."""
    if not train:
        return ClipTransform(crop_size=config.crop_size, **options)
    return ClipTransform(
        crop_size=config.crop_size,
        train=True,
        scales=config.crop_scales,
        horizontal_flip=config.horizontal_flip,
        **options,
    )


# --------------------------------------------------------------------------------------------------------
# Devices, seeds and random states


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when present, else the CPU; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global state is what third-party code draws from
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy and torch generator states as tensors and plain types (``weights_only``-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {
            "version": py_version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore generator states captured by :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------------
# Model, optimiser, schedule


def model_args(
    config: TrainingConfig, in_channels: int, num_classes: int | None, **extra: Any
) -> dict[str, Any]:
    """Arguments of :func:`motionfit.models.video_net.build_model` for ``config``'s network."""
    return {
        "arch": config.arch,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "width_multiplier": config.width_multiplier,
        "layers": config.layers,
        "dropout": config.dropout,
        **extra,
    }


def make_optimizer(parameters: Iterable[nn.Parameter], config: TrainingConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay over the parameters that require gradients."""
    trainable = [p for p in parameters if p.requires_grad]
    return torch.optim.SGD(
        trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def lr_factor(
    iteration: int,
    iters_per_epoch: int,
    config: TrainingConfig,
) -> float:
    """LR multiplier at ``iteration`` (0-based): linear warm-up over ``warmup_epochs`` from ``warmup_factor``
    to 1, then ``constant``, ``cosine`` (to 0 at the last iteration) or ``multistep`` (x ``lr_gamma`` at each
    milestone epoch)."""
    warmup_iters = round(config.warmup_epochs * iters_per_epoch)
    if iteration < warmup_iters:
        return config.warmup_factor + (1.0 - config.warmup_factor) * iteration / warmup_iters
    if config.lr_schedule == "cosine":
        total = max(config.epochs * iters_per_epoch - warmup_iters, 1)
        return 0.5 * (1.0 + math.cos(math.pi * (iteration - warmup_iters) / total))
    if config.lr_schedule == "multistep":
        epoch = iteration // iters_per_epoch
        return config.lr_gamma ** sum(epoch >= m for m in config.lr_milestones)
    return 1.0


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, iters_per_epoch: int, config: TrainingConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per iteration following :func:`lr_factor`."""
    if iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}: is the training set empty?")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, iters_per_epoch, config))


def use_amp(config: TrainingConfig, device: torch.device) -> bool:
    return config.amp and device.type == "cuda"


def make_scaler(config: TrainingConfig, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for mixed precision on CUDA."""
    return torch.amp.GradScaler("cuda", enabled=use_amp(config, device))


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Move ``model`` to ``device`` (channels-last 3D memory when asked)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last_3d) if channels_last else model


def to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Move the tensors of a collated batch to ``device``; 5-D clip batches ``[B, C, T, H, W]`` go to
    channels-last 3D memory when ``channels_last`` (6-D multi-clip batches are reshaped by their user)."""
    moved = {}
    for name, value in batch.items():
        if isinstance(value, Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 5 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last_3d)
        moved[name] = value
    return moved


def clips_as_batch(clips: Tensor, channels_last: bool = False) -> Tensor:
    """``[B, R, C, T, H, W]`` multi-clip batches to ``[B*R, C, T, H, W]`` (channels-last when asked)."""
    clips = clips.flatten(0, 1) if clips.ndim == 6 else clips
    return clips.contiguous(memory_format=torch.channels_last_3d) if channels_last else clips


# --------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class StepOutput:
    """What a training step returns: the ``loss`` to minimise, scalar ``metrics`` to average over the epoch,
    the number of clips it processed, and ``after_update`` (run after the optimiser step, e.g. to write new
    embeddings into a memory bank that the loss read)."""

    loss: Tensor
    metrics: dict[str, float | Tensor] = field(default_factory=dict)
    n_clips: int = 0
    after_update: Callable[[], None] | None = None


StepFn = Callable[[dict[str, Any]], StepOutput]


def train_one_epoch(
    model: nn.Module,
    step_fn: StepFn,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    data_loader: Iterable[dict[str, Any]],
    device: torch.device,
    epoch: int,
    scaler: torch.amp.GradScaler,
    amp: bool = False,
    channels_last: bool = False,
    log_every: int = 50,
) -> dict[str, float]:
    """One epoch of ``step_fn`` over ``data_loader``; returns the epoch means of the loss and step metrics,
    the last learning rate, the optimiser ``steps`` taken and throughput (``clips_per_s``, ``seconds``).

    ``step_fn(batch)`` gets the batch already on ``device`` and runs under autocast when ``amp``; the loop
    does the backward pass (through ``scaler``), the optimiser step and the per-iteration scheduler step.
    When several processes train together (``step_fn`` from :func:`distributed.data_parallel`), the means
    and the clip count are those of the whole batches, over every rank.
    """
    model.train()
    sums: dict[str, float] = {}
    n_steps = n_clips = 0
    start = time.perf_counter()
    for batch in data_loader:
        batch = to_device(batch, device, channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            output = step_fn(batch)
        if not torch.isfinite(output.loss):
            raise FloatingPointError(f"epoch {epoch} step {n_steps}: training loss is {output.loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(output.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if output.after_update is not None:
            output.after_update()
        if lr_scheduler is not None:
            lr_scheduler.step()
        values = {"loss": output.loss, **output.metrics}
        for name, value in values.items():  # summed on the device: no synchronisation per step
            value = value.detach().float() if isinstance(value, Tensor) else float(value)
            sums[name] = sums.get(name, 0.0) + value
        n_steps += 1
        n_clips += output.n_clips
        if log_every and n_steps % log_every == 0:
            logger.info("epoch %d step %d loss %.4f", epoch, n_steps, float(sums["loss"]) / n_steps)
    if n_steps == 0:
        raise ValueError(f"epoch {epoch}: the data loader yielded no batch (fewer items than one batch?)")
    metrics = distributed.mean_over_ranks(
        {name: float(total) / n_steps for name, total in sums.items()}, device
    )
    n_clips = distributed.sum_over_ranks(n_clips, device)
    seconds = time.perf_counter() - start
    metrics.update(
        lr=optimizer.param_groups[0]["lr"], steps=n_steps, seconds=seconds, clips_per_s=n_clips / seconds
    )
    return metrics


@torch.no_grad()
def predict_clips(
    model: nn.Module,
    data_loader: Iterable[dict[str, Any]],
    device: torch.device,
    modality: str,
    amp: bool = False,
    channels_last: bool = False,
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outputs of ``model`` (``forward(model, clips)``, default ``model(clips)``) on every clip.

    Returns ``(item_index [N] int64, labels [N] int64, outputs [N, K] float32)`` in loader order; multi-clip
    items give R rows each.
    """
    model.eval()
    indices, labels, outputs = [], [], []
    for batch in data_loader:
        batch = to_device(batch, device)
        clips = batch[modality]
        n_per_item = clips.shape[1] if clips.ndim == 6 else 1
        clips = clips_as_batch(clips, channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            result = model(clips) if forward is None else forward(model, clips)
        outputs.append(result.float().cpu())
        indices.append(batch["index"].cpu().repeat_interleave(n_per_item))
        labels.append(batch["label"].cpu().repeat_interleave(n_per_item))
    if not outputs:
        raise ValueError("predict_clips: the data loader yielded no batch")
    return torch.cat(indices).numpy(), torch.cat(labels).numpy(), torch.cat(outputs).numpy()


def video_outputs(
    model: nn.Module,
    layout: RunLayout,
    video_ids: Sequence[str],
    modality: str,
    n_clips: int,
    clip_length: int,
    crop_size: int,
    forward: Callable[[nn.Module, Tensor], Tensor],
    frame_stride: int = 1,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    amp: bool = False,
) -> tuple[list[str], np.ndarray]:
    """``forward(model, clips)`` of ``n_clips`` evenly spaced centre-cropped clips per video, averaged per
    video: ``(video_ids, outputs [V, ...] float32)``. Videos missing from the modality's store are left out
    (and logged), the others keep their order."""
    device = resolve_device(device)
    keys = video_clip_keys(layout, video_ids, (modality,), clip_length, n_clips, frame_stride)
    dataset = ClipDataset(
        layout, keys, (modality,), clip_length, ClipTransform(crop_size=crop_size), frame_stride=frame_stride
    )
    loader = clip_loader(dataset, batch_size, device, shuffle=False, num_workers=num_workers)
    items, _, outputs = predict_clips(model.to(device), loader, device, modality, amp, forward=forward)
    ids, means = video_means(outputs, keys["video_id"].to_numpy()[items])
    return ids, means.astype(np.float32)


def video_accuracy(item_video: np.ndarray, labels: np.ndarray, clip_logits: np.ndarray) -> float:
    """Top-1 (%) of videos whose clip softmax scores are averaged (torchvision's video-level accuracy).

    ``item_video [N]``: a video id (or index) per clip, ``labels [N]``, ``clip_logits [N, K]``.
    """
    probabilities = torch.softmax(torch.from_numpy(clip_logits), dim=1).numpy()
    video_ids, means = video_means(probabilities, item_video)
    video_labels = pd.Series(labels).groupby(np.asarray(item_video), sort=False).first().loc[video_ids]
    return float(100.0 * (means.argmax(axis=1) == video_labels.to_numpy()).mean())


def validate(
    model: nn.Module,
    clips: ClipLoader,
    device: torch.device,
    modality: str,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Clip loss, clip top-1 and video-level top-1 (%, clip softmax averaged per video) of a classifier on
    the labelled clip items of ``clips``."""
    items, labels, logits = predict_clips(model, clips, device, modality, amp, channels_last)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return {
        "loss": loss,
        "clip_top1": float(100.0 * (logits.argmax(axis=1) == labels).mean()),
        "video_top1": video_accuracy(clips.dataset.keys["video_id"].to_numpy()[items], labels, logits),
    }


# --------------------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(url: str, checkpoint: Mapping[str, Any]) -> None:
    """Write ``checkpoint`` to ``url`` atomically (a crash leaves the previous checkpoint intact)."""
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    fs.write_bytes_atomic(url, buffer.getvalue())


def load_checkpoint(url: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; FileNotFoundError naming ``url`` when missing."""
    filesystem, path = fs.resolve(url)
    if not filesystem.exists(path):
        raise FileNotFoundError(f"checkpoint {url} does not exist")
    with filesystem.open(path, "rb") as handle:
        data = handle.read()
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def network_state(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict of the network a stage exports (``checkpoint["network_prefix"]`` stripped)."""
    prefix = checkpoint.get("network_prefix", "")
    return {k[len(prefix) :]: v for k, v in checkpoint["model"].items() if k.startswith(prefix)}


def load_network(url: str, device: torch.device | str = "cpu") -> tuple[VideoNet, dict[str, Any]]:
    """Rebuild the network a stage exported (``network_args``) with its trained weights, in eval mode.

    Returns ``(network, checkpoint)``.
    """
    checkpoint = load_checkpoint(url)
    if "network_args" not in checkpoint:
        raise KeyError(f"checkpoint {url} has no 'network_args': it was not written by a training stage")
    network = build_model(**checkpoint["network_args"])
    network.load_state_dict(network_state(checkpoint))
    return network.to(device).eval(), checkpoint


def _same_config(stored: Mapping[str, Any], current: Mapping[str, Any], config_type: type[BaseModel]) -> bool:
    """Whether a checkpoint's ``stored`` config trains what ``current`` (a plain dump of a ``config_type``)
    does: equal in every field but those of ``RESUME_IGNORED_FIELDS``, fields the checkpoint predates that
    hold their default, and fields since removed (so adding a config field leaves existing checkpoints
    valid)."""
    defaults = _plain(
        {
            name: field.get_default(call_default_factory=True)
            for name, field in config_type.model_fields.items()
        }
    )
    for name in current.keys() - RESUME_IGNORED_FIELDS:
        expected = stored[name] if name in stored else defaults.get(name)
        if current[name] != expected:
            return False
    return True


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with tuples as lists, so stored and fresh configs compare equal."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


@dataclass
class TrainingState:
    """Everything :func:`fit` saves and restores: the trained ``model`` (all its networks and buffers), the
    optimiser, the per-iteration scheduler (or an epoch-level one such as ReduceLROnPlateau), the scaler,
    and ``network_args``/``network_prefix`` telling later stages how to rebuild the exported network."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    scaler: torch.amp.GradScaler
    network_args: dict[str, Any]
    network_prefix: str = ""


def fit(
    layout: RunLayout,
    stage: str,
    config: TrainingConfig,
    state: TrainingState,
    run_epoch: Callable[[int], dict[str, Any]],
    on_epoch_end: EpochCallback | None = None,
    data_key: str | None = None,
) -> list[dict[str, Any]]:
    """Run epochs ``0 .. config.epochs - 1`` of ``run_epoch(epoch) -> metrics``, resuming from the stage's
    checkpoint when its config (see :func:`_same_config`) and its ``data_key`` match; a
    checkpoint of another config or other training data is replaced after the first epoch. ``data_key``
    names the content of the stage's inputs (labels, clusters, initial weights): without it, a stage whose
    labels changed would resume from, and return, a network trained on the old ones. After each epoch the
    checkpoint and ``history.parquet`` are written and ``on_epoch_end(metrics)`` is called with ``stage``
    and ``epoch`` added; when several processes train together, rank 0 alone does so while the others wait,
    and every rank resumes from the same checkpoint.

    Call it right after seeding and building ``state`` so that a fresh and a resumed run start alike.
    Returns the whole metrics history (one dict per epoch).
    """
    url = layout.checkpoint(stage)
    config_dict = _plain(config.model_dump())
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if fs.exists(url):
        checkpoint = load_checkpoint(url)
        same_data = checkpoint.get("data_key") == data_key
        if same_data and _same_config(checkpoint["config"], config_dict, type(config)):
            state.model.load_state_dict(checkpoint["model"])
            state.optimizer.load_state_dict(checkpoint["optimizer"])
            if state.lr_scheduler is not None:
                state.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
            state.scaler.load_state_dict(checkpoint["scaler"])
            restore_rng_state(checkpoint["rng_state"])
            start_epoch = checkpoint["epoch"] + 1
            if table_exists(layout.history(stage)):
                history = read_table(layout.history(stage)).to_dict("records")[:start_epoch]
            logger.info("%s: resuming after epoch %d of %d from %s", stage, start_epoch, config.epochs, url)
        else:
            logger.warning(
                "%s: checkpoint %s was made with %s; training from scratch",
                stage,
                url,
                "another config" if same_data else "other training data",
            )
    if start_epoch >= config.epochs:
        logger.info("%s: all %d epochs were trained before; nothing to do", stage, config.epochs)
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        metrics = {"stage": stage, "epoch": epoch, **run_epoch(epoch)}
        history.append(metrics)
        if (
            distributed.is_main()
        ):  # the history first: a kill between the two leaves it a row ahead, cut on resume
            write_table(layout.history(stage), pd.DataFrame(history))
            save_checkpoint(
                url,
                {
                    "model": state.model.state_dict(),
                    "optimizer": state.optimizer.state_dict(),
                    "lr_scheduler": None if state.lr_scheduler is None else state.lr_scheduler.state_dict(),
                    "scaler": state.scaler.state_dict(),
                    "epoch": epoch,
                    "config": config_dict,
                    "data_key": data_key,
                    "rng_state": capture_rng_state(),
                    "network_args": state.network_args,
                    "network_prefix": state.network_prefix,
                },
            )
            per_epoch = (time.perf_counter() - started) / (epoch + 1 - start_epoch)
            logger.info(epoch_line(metrics, config.epochs, per_epoch * (config.epochs - epoch - 1)))
            if on_epoch_end is not None:
                on_epoch_end(dict(metrics))
        distributed.barrier()
    return history


QUIET_METRICS = ("stage", "epoch", "steps", "seconds", "clips_per_s")


def epoch_line(metrics: dict[str, Any], epochs: int, eta_seconds: float) -> str:
    """The log line of a finished epoch: ``teacher epoch 3/60: loss 1.234, top1 45, lr 0.01 (12.3 s,
    ETA 11 min)``."""
    values = ", ".join(
        f"{name} {value:.4g}"
        for name, value in metrics.items()
        if name not in QUIET_METRICS and isinstance(value, (int, float))
    )
    eta = f"{eta_seconds / 60:.0f} min" if eta_seconds >= 90 else f"{eta_seconds:.0f} s"
    return (
        f"{metrics['stage']} epoch {metrics['epoch'] + 1}/{epochs}: {values} "
        f"({metrics.get('seconds', 0.0):.1f} s training, ETA {eta})"
    )


def last_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last epoch's metrics (empty when no epoch ran)."""
    return dict(history[-1]) if history else {}
