"""Training throughput (clips/s) of the flow teacher and the RGB student at 16 x 112 x 112.

For each modality, in one run on the same clips:

- ``loader``: the real pipeline alone (zarr store -> ClipDataset -> DataLoader workers), no model;
- ``model``: forward + backward + SGD step of the network on in-memory tensors (the reference);
- ``end to end``: ``train_one_epoch`` fed by the real loader.

The loader should deliver at least twice the model's rate, so that training is never input-bound. On CUDA
the full R(2+1)D-18 runs with AMP and channels-last; on a CPU pass ``--width`` (e.g. 0.125) to keep it short.

    python benchmarks/bench_training.py --width 0.125 --workers 1 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import MODALITY_CHANNELS, ClipDataset, clip_loader, video_clip_keys
from motionfit.tasks.data.transforms import ClipTransform
from motionfit.tasks.training.config import TrainingConfig
from motionfit.tasks.training.loop import (
    StepOutput,
    make_optimizer,
    make_scaler,
    prepare_model,
    resolve_device,
    train_one_epoch,
)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int = 8) -> np.ndarray:
    """uint8 noise with some spatial structure (compresses like real frames, about 1.1-1.4x)."""
    t, h, w, c = shape
    coarse = rng.integers(0, 256, (t, cells, cells, c)).astype(np.float32)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(coarse).permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False
    )
    noise = rng.normal(0, 12, (t, c, h, w)).astype(np.float32)
    return (up.numpy() + noise).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def write_run(root: str, n_videos: int, n_frames: int, height: int, width: int, seed: int = 0) -> RunLayout:
    """Frames ``[T, H, W, 3]`` and flow ``[T-1, H, W, 2]`` of ``n_videos`` synthetic videos."""
    layout = RunLayout.at(root)
    rng = np.random.default_rng(seed)
    for index in range(n_videos):
        video_id = f"video_{index:04d}"
        layout.store("frames").write(video_id, smooth_noise(rng, (n_frames, height, width, 3)))
        layout.store("flow").write(video_id, smooth_noise(rng, (n_frames - 1, height, width, 2)) // 4 + 96)
    return layout


def rate(n_clips: int, seconds: float) -> float:
    return n_clips / seconds if seconds > 0 else float("nan")


def bench_modality(
    args: argparse.Namespace, layout: RunLayout, modality: str, device: torch.device
) -> dict[str, Any]:
    video_ids = sorted(layout.store("frames").committed_ids())
    keys = video_clip_keys(layout, video_ids, (modality,), args.clip_length, args.clips_per_video)
    transform = ClipTransform(crop_size=args.crop_size, train=True)
    dataset = ClipDataset(
        layout, keys, (modality,), args.clip_length, transform, jitter_segments=args.clips_per_video
    )
    n_samples = (args.steps + args.warmup_steps) * args.batch_size
    loader = clip_loader(
        dataset, args.batch_size, device, shuffle=True, num_workers=args.workers, num_samples=n_samples
    )
    amp = device.type == "cuda"

    # the loader alone (the first batches start the workers and are not timed)
    iterator = iter(loader)
    for _ in range(args.warmup_steps):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.steps):
        next(iterator)
    loader_rate = rate(args.steps * args.batch_size, time.perf_counter() - start)

    # the model alone on in-memory tensors
    config = TrainingConfig(lr=0.01, amp=True)
    model = build_model(
        args.arch, MODALITY_CHANNELS[modality], 400, width_multiplier=args.width, layers=args.layers
    )
    model = prepare_model(model, device, channels_last=amp)
    optimizer = make_optimizer(model.parameters(), config)
    scaler = make_scaler(config, device)
    clips = torch.randn(
        args.batch_size, MODALITY_CHANNELS[modality], args.clip_length, args.crop_size, args.crop_size
    )
    batches = [{modality: clips, "index": torch.arange(args.batch_size)}] * (args.steps + args.warmup_steps)

    def step(batch: dict[str, Any]) -> StepOutput:  # the items' indices stand in for class labels
        logits = model(batch[modality])
        return StepOutput(F.cross_entropy(logits.float(), batch["index"] % 400), n_clips=logits.shape[0])

    common = {"amp": amp, "channels_last": amp, "log_every": 0}
    train_one_epoch(model, step, optimizer, None, batches[: args.warmup_steps], device, 0, scaler, **common)
    if device.type == "cuda":
        torch.cuda.synchronize()
    model_rate = train_one_epoch(
        model, step, optimizer, None, batches[args.warmup_steps :], device, 0, scaler, **common
    )["clips_per_s"]

    # end to end: the model fed by the loader
    loader.set_epoch(1)
    end_to_end = train_one_epoch(model, step, optimizer, None, loader, device, 1, scaler, **common)[
        "clips_per_s"
    ]
    return {"loader": loader_rate, "model": model_rate, "end_to_end": end_to_end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="r2plus1d_18")
    parser.add_argument(
        "--width", type=float, default=None, help="width multiplier (default: 1 on CUDA, 1/8 on CPU)"
    )
    parser.add_argument(
        "--layers", type=int, nargs=4, default=None, help="blocks per stage (default 2 2 2 2)"
    )
    parser.add_argument("--clip-length", type=int, default=16)
    parser.add_argument("--crop-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--clips-per-video", type=int, default=4)
    parser.add_argument("--frame-height", type=int, default=128, help="stored frame height (short side)")
    parser.add_argument("--frame-width", type=int, default=171, help="stored frame width")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.width is None:
        args.width = 1.0 if device.type == "cuda" else 0.125
    args.layers = tuple(args.layers) if args.layers else None
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        layout = write_run(root, args.videos, args.frames, args.frame_height, args.frame_width)
        seconds = time.perf_counter() - start
        size = f"{args.frame_height}x{args.frame_width}"
        print(f"wrote {args.videos} videos x {args.frames} frames of {size} in {seconds:.1f} s")
        clip = f"{args.clip_length}x{args.crop_size}x{args.crop_size}"
        print(
            f"device {device}, {args.arch} width x{args.width}, {clip}, batch {args.batch_size}, "
            f"{args.workers} loader workers, {args.threads} training threads"
        )
        print(f"{'modality':<10}{'loader':>12}{'model':>12}{'end to end':>12}{'loader/model':>14}  (clips/s)")
        for modality in ("flow", "rgb"):
            result = bench_modality(args, layout, modality, device)
            print(
                f"{modality:<10}{result['loader']:>12.1f}{result['model']:>12.1f}{result['end_to_end']:>12.1f}"
                f"{result['loader'] / result['model']:>14.2f}"
            )


if __name__ == "__main__":
    main()
