"""SIGKILL at random points of decode, flow, IDT and teacher training, ten kills in one run root: after the
last re-run no video is lost, no committed video or finished epoch was computed again, and every array and
the teacher's weights are byte-identical to an uninterrupted run's."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from prefect.settings import PREFECT_API_URL

from motionfit.config import load_config
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.config import SynthConfig
from motionfit.tasks.data.ingest import synthetic_data_config
from motionfit.tasks.data.synth import generate_dataset

pytestmark = pytest.mark.slow

VIDEO_STAGES = {"decode": "frames", "flow": "flow", "idt": "idt"}
KILLS = {"decode": 2, "flow": 3, "idt": 3, "teacher": 2}
TEACHER_EPOCHS = 6
TOTALS = {"decode": 18, "flow": 18, "idt": 9, "teacher": TEACHER_EPOCHS}
"""What each stage has to do: 18 videos decoded and with flow, the 9 source videos' IDT, 6 epochs."""


def _config_file(data_root: Path, run_root: Path) -> Path:
    config = load_config(
        preset="tiny",
        overrides={
            "run_root": str(run_root),
            "synth": None,
            "data": synthetic_data_config(data_root).model_dump(mode="json"),
            "methods": ["scratch", "teacher", "idt_la"],
            "decode": {"short_side": 48},
            "cluster": {"n_clusters": 3},
            "teacher": {"epochs": TEACHER_EPOCHS, "batch_size": 2},
            # one video per batch and one batch at a time: a stage commits videos one by one
            "runtime": {"videos_per_batch": 1, "max_workers": 1, "retry_delay_seconds": 0},
        },
    )
    path = run_root.parent / f"{run_root.name}.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))
    return path


def _start(config_file: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "INFO"}
    command = [
        sys.executable,
        "-m",
        "motionfit.cli",
        "-v",
        "run",
        str(config_file),
        "--until",
        "teacher_train",
    ]
    with log.open("w") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _progress(layout: RunLayout, stage: str) -> int:
    """Videos committed by a per-video stage, or epochs finished by the teacher."""
    if stage == "teacher":
        history = layout.history("teacher")
        return len(read_table(history)) if fs.exists(history) else 0
    return len(layout.markers(stage).committed_ids())


def _commit_times(layout: RunLayout) -> dict[tuple[str, str], float]:
    times = {}
    for stage in VIDEO_STAGES:
        markers = layout.markers(stage)
        for video_id in markers.committed_ids():
            times[stage, video_id] = markers.committed_info(video_id)["time"]
    return times


def _kill_points(rng: random.Random) -> list[tuple[str, int]]:
    """(stage, progress to reach before the kill), in DAG order: distinct random points inside each stage."""
    points = []
    for stage, kills in KILLS.items():
        points += [(stage, point) for point in sorted(rng.sample(range(1, TOTALS[stage] - 1), kills))]
    return points


def test_ten_kills_lose_and_recompute_nothing(prefect_server, tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    generate_dataset(
        data_root,
        SynthConfig(
            seed=5,
            classes=["TranslateLeft", "TranslateUp", "RotateClockwise"],
            n_train_per_class=2,
            n_test_per_class=1,
            n_source_per_class=3,
            n_frames=16,
            frame_size_px=(48, 48),
        ),
    )
    killed_file, reference_file = (
        _config_file(data_root, tmp_path / name) for name in ("killed", "reference")
    )
    layout = RunLayout.at(tmp_path / "killed")
    seen: dict[tuple[str, str], float] = {}
    points = _kill_points(random.Random(16))
    for attempt, (stage, point) in enumerate(points):
        process = _start(killed_file, tmp_path / f"attempt-{attempt}.log")
        while _progress(layout, stage) < point:
            assert process.poll() is None, (tmp_path / f"attempt-{attempt}.log").read_text()[-3000:]
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert _progress(layout, stage) < TOTALS[stage], f"kill {attempt} came after {stage} had finished"
        seen.update(_commit_times(layout))
    assert len(points) >= 10

    final = _start(killed_file, tmp_path / "final.log")
    reference = _start(reference_file, tmp_path / "reference.log")
    for process, log in ((final, "final.log"), (reference, "reference.log")):
        assert process.wait(timeout=900) == 0, (tmp_path / log).read_text()[-3000:]

    after = _commit_times(layout)
    assert {key: after.get(key) for key in seen} == seen, "a video committed before a kill was computed again"
    expected = RunLayout.at(tmp_path / "reference")
    for stage, store in VIDEO_STAGES.items():
        ours, theirs = layout.store(store), expected.store(store)
        assert len(theirs.committed_ids()) == TOTALS[stage] and ours.committed_ids() == theirs.committed_ids()
        assert not layout.markers(stage).failures(), f"{stage} lost videos"
        for video_id in theirs.committed_ids():
            np.testing.assert_array_equal(ours.read(video_id), theirs.read(video_id), err_msg=video_id)

    history = read_table(layout.history("teacher"))
    assert list(history["epoch"]) == list(range(TEACHER_EPOCHS)), "a finished epoch was trained again"
    logs = [tmp_path / f"attempt-{attempt}.log" for attempt in range(len(points))] + [tmp_path / "final.log"]
    resumed = [log.name for log in logs if "teacher: resuming after epoch" in log.read_text()]
    assert len(resumed) == KILLS["teacher"], "each restart after a teacher kill resumed from its checkpoint"
    ours = torch.load(layout.checkpoint("teacher"), weights_only=True)["model"]
    theirs = torch.load(expected.checkpoint("teacher"), weights_only=True)["model"]
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
