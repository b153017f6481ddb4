"""Peak memory of decode, flow, IDT, Fisher-vector encoding and verify on one long 1280x720 video: the
streamed stages beside the whole-video path of the same work, measured in the same run.

The video is generated (a textured scene panning by (8, 3) px per frame, mp4v) for ``--seconds`` at 25 fps.
Each measurement runs in a fresh process, which forgets the peak of its imports (``/proc/self/clear_refs``)
and reports its peak resident memory (VmHWM) above what it held before the work, in MiB. Streamed: the
stages as the pipeline runs them within ``--memory-mib`` (``runtime.video_memory_mib``), writing to a run
root. Whole video: the same computation on the whole video in memory, as the stages did before they
streamed (``decode_video``; ``compute_tvl1_flow`` and ``quantize_flow`` of all frames;
``extract_trajectories`` of all frames), without storage. fv_encode encodes the stored trajectories with a
Fisher model fitted on them (before the measurement) block by block, beside ``encode_video`` of the whole
array; verify checks the stored trajectories' checksum block by block, beside a read of the whole array.
TV-L1 runs one iteration per pair and IDT one scale without camera motion unless ``--release``: neither
changes what the windows hold, only how long the run takes. Run::

    python benchmarks/bench_memory.py --seconds 180
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

STAGES = ("decode", "flow", "idt", "fv_encode", "verify")


def write_video(path: Path, n_frames: int) -> None:
    """A 1280x720 mp4 of a textured scene panning by (8, 3) px per frame."""
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), (0, 0), 4)
    scene = np.tile(cv2.normalize(scene, None, 0, 255, cv2.NORM_MINMAX), (2, 2, 1))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (1280, 720))
    for t in range(n_frames):
        x, y = 8 * t % 1280, 3 * t % 720
        writer.write(np.ascontiguousarray(scene[y : y + 720, x : x + 1280]))
    writer.release()


def status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def measure(stage: str, whole: bool, args: argparse.Namespace) -> dict[str, float | str]:
    """Run one measurement in this process (the child's side): what it did and its peak above baseline."""
    from motionfit.storage.arrays import array_checksum
    from motionfit.storage.layout import RunLayout
    from motionfit.storage.verify import check_video
    from motionfit.tasks.data.config import DecodeConfig
    from motionfit.tasks.data.decode import decode_video, decode_videos
    from motionfit.tasks.idt.config import IdtConfig
    from motionfit.tasks.idt.extractor import extract_trajectories
    from motionfit.tasks.idt.stage import extract_idt_videos
    from motionfit.tasks.motion.codec import quantize_flow
    from motionfit.tasks.motion.config import FlowConfig
    from motionfit.tasks.motion.tvl1 import compute_flows, compute_tvl1_flow
    from motionfit.tasks.prior.config import FisherConfig
    from motionfit.tasks.prior.fisher import encode_video, fit_fisher_model, sample_descriptors

    layout = RunLayout.at(args.root)
    decode = DecodeConfig(short_side=args.short_side)
    flow = FlowConfig(backend="opencv")
    idt = IdtConfig()
    if not args.release:
        flow = flow.model_copy(
            update={"n_scales": 1, "warps": 1, "inner_iterations": 1, "outer_iterations": 1}
        )
        idt = idt.model_copy(update={"max_scales": 1, "camera_motion": False})
    frames, trajectories = layout.store("frames"), layout.store("idt")
    loaded = frames.read("long") if whole and stage in ("flow", "idt") else None
    if stage == "fv_encode":
        fisher = FisherConfig(descriptors_per_video=20000)
        sample = sample_descriptors(trajectories.arrays(["long"]), fisher, np.random.default_rng(0))
        model = fit_fisher_model(sample, fisher)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    baseline = status_mib("VmRSS:")
    start = time.perf_counter()
    if stage == "decode" and whole:
        result = f"{len(decode_video(args.video, decode).frames)} frames"
    elif stage == "decode":
        [outcome] = decode_videos([("long", str(args.video))], layout, decode)
        result = f"{outcome.status}, {frames.shape('long')[0]} frames"
    elif stage == "flow" and whole:
        result = f"{len(quantize_flow(compute_tvl1_flow(loaded, flow), flow.flow_bound))} pairs"
    elif stage == "flow":
        [outcome] = compute_flows(["long"], layout, flow, args.memory_mib)
        result = f"{outcome.status}, {layout.store('flow').shape('long')[0]} pairs"
    elif stage == "idt" and whole:
        result = f"{len(extract_trajectories(loaded, idt).trajectories)} trajectories"
    elif stage == "idt":
        [outcome] = extract_idt_videos(["long"], layout, idt, args.memory_mib)
        result = f"{outcome.status}, {trajectories.shape('long')[0]} trajectories"
    elif stage == "fv_encode":
        rows = trajectories.read("long") if whole else trajectories.row_blocks("long", fisher.gmm.batch_size)
        result = f"{encode_video(rows, model).shape[0]}-d sketch of {trajectories.shape('long')[0]} rows"
    elif whole:
        found = array_checksum(trajectories.group["long"][...])
        result = "intact" if found == trajectories.markers.committed_info("long")["checksum"] else "damaged"
    else:
        result = check_video(trajectories, "long") or "intact"
    seconds = time.perf_counter() - start
    return {"result": result, "peak_mib": status_mib("VmHWM:") - baseline, "seconds": seconds}


def run_child(stage: str, whole: bool, args: argparse.Namespace) -> dict[str, float | str]:
    command = [sys.executable, __file__, "--measure", stage, "--video", str(args.video), "--root", args.root]
    command += ["--short-side", str(args.short_side), "--memory-mib", str(args.memory_mib)]
    command += ["--whole"] * whole + ["--release"] * args.release
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def described(run: dict[str, float | str]) -> str:
    return f"{run['peak_mib']:7.1f} MiB ({run['result']}, {run['seconds']:.0f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the video at 25 fps")
    parser.add_argument("--short-side", type=int, default=128, help="decode.short_side")
    parser.add_argument("--memory-mib", type=float, default=256.0, help="runtime.video_memory_mib")
    parser.add_argument(
        "--release", action="store_true", help="OpenCV's TV-L1 and the IDT release's defaults"
    )
    parser.add_argument("--measure", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.whole, args)))
        return
    with tempfile.TemporaryDirectory() as folder:
        args.video, args.root = Path(folder) / "long.mp4", str(Path(folder) / "run")
        n_frames = round(args.seconds * 25)
        start = time.perf_counter()
        write_video(args.video, n_frames)
        print(
            f"{n_frames} frames of 1280x720 ({args.seconds:.0f} s at 25 fps) written in "
            f"{time.perf_counter() - start:.0f} s; short side {args.short_side}, budget {args.memory_mib} MiB"
        )
        for stage in STAGES:  # the streamed run first: it stores what the next stage reads
            streamed, whole = run_child(stage, False, args), run_child(stage, True, args)
            print(f"{stage:9s} streamed {described(streamed)}   whole video {described(whole)}")


if __name__ == "__main__":
    main()
