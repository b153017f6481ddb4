"""A long 1280x720 video goes through decode, flow and IDT within ``runtime.video_memory_mib``: each stage
runs in a fresh process whose peak resident memory (VmHWM, reset after its imports) is measured against the
memory it held before the stage."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_videos

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset"),
]

N_FRAMES = 1000
"""40 s of 25 fps video: its frames at a 256 px short side (349 MB), its frames at 128 px with their float
flow (321 MB) and with their grey and their trajectories (about 290 MB) exceed the budget twice or more."""
BUDGET_MIB = 128

STAGE = """
import json, sys
stage, root, video, memory_mib = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_videos
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.stage import extract_idt_videos
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import compute_flows

def status_mib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024

layout = RunLayout.at(root)
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the peak so far (the imports') is forgotten
baseline = status_mib("VmRSS:")
if stage == "decode":
    [outcome] = decode_videos([("long", video)], layout, DecodeConfig(short_side=256))
elif stage == "flow":  # one iteration: TV-L1's memory hardly depends on them
    config = FlowConfig(n_scales=1, warps=1, inner_iterations=1, outer_iterations=1)
    [outcome] = compute_flows(["long"], layout, config, memory_mib)
else:
    config = IdtConfig(max_scales=1, camera_motion=False)
    [outcome] = extract_idt_videos(["long"], layout, config, memory_mib)
print(json.dumps({"status": outcome.status, "baseline": baseline, "peak": status_mib("VmHWM:")}))
"""


def write_long_video(path: Path, n_frames: int) -> None:
    """The long 1280x720 video of benchmarks/bench_memory.py (one generator for the test and the figures)."""
    bench = Path(__file__).parents[2] / "benchmarks" / "bench_memory.py"
    spec = importlib.util.spec_from_file_location("bench_memory", bench)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_video(path, n_frames)


def stage_memory_mib(stage: str, root: Path, video: Path) -> float:
    """Peak resident memory of ``stage`` on the video ``long`` of ``root`` above what its process held
    before, MiB."""
    command = [sys.executable, "-c", STAGE, stage, str(root), str(video), str(BUDGET_MIB)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    measured = json.loads(done.stdout.splitlines()[-1])
    assert measured["status"] == "done", done.stderr
    return measured["peak"] - measured["baseline"]


def test_a_long_1280x720_video_stays_within_the_memory_budget_in_every_stage(tmp_path: Path) -> None:
    video = tmp_path / "long.mp4"
    write_long_video(video, N_FRAMES)
    budget = BUDGET_MIB * 2**20

    decoded = stage_memory_mib("decode", tmp_path / "decode", video)
    frames = RunLayout.at(tmp_path / "decode").store("frames")
    assert frames.shape("long") == (N_FRAMES, 256, 455, 3)
    assert N_FRAMES * 256 * 455 * 3 > 2 * budget  # what decoding into memory would hold

    layout = RunLayout.at(tmp_path / "run")
    decode_videos([("long", str(video))], layout, DecodeConfig(short_side=128))
    flowed = stage_memory_mib("flow", tmp_path / "run", video)
    assert N_FRAMES * 128 * 228 * (3 + 8) > 2 * budget  # the frames and their float flow

    tracked = stage_memory_mib("idt", tmp_path / "run", video)
    rows = layout.store("idt").shape("long")[0]
    assert N_FRAMES * 128 * 228 * (3 + 1) + rows * 436 * 4 > 2 * budget  # RGB, grey, float32 rows

    measured = {"decode": decoded, "flow": flowed, "idt": tracked}
    assert all(0 < mib < BUDGET_MIB for mib in measured.values()), measured
