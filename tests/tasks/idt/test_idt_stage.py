"""The IDT stage: a video read in windows gives the trajectories of the whole video, in either flow mode."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from motionfit.storage.arrays import VideoArrayStore
from motionfit.storage.layout import RunLayout
from motionfit.tasks.idt import stage
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.extractor import extract_trajectories
from motionfit.tasks.motion.codec import dequantize_flow, quantize_flow

MOTION = (1.5, 0.75)
"""Motion of the test video's object, px per frame (x, y)."""
OBJECT = 28
"""Side of the object, px."""


def texture(height: int, width: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX)


def moving_object(n_frames: int, height: int = 64, width: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A textured square moving by :data:`MOTION` per frame over a still textured background: frames
    ``[T, height, width, 3] uint8`` and the flow into each frame but the first ``[T-1, height, width, 2]``."""
    background, square = texture(height, width, 0), texture(OBJECT, OBJECT, 1)
    frames = np.repeat(background[np.newaxis], n_frames, axis=0)
    flow = np.zeros((n_frames - 1, height, width, 2), np.float32)
    for t in range(n_frames):
        x, y = (round(8 + MOTION[0] * t), round(8 + MOTION[1] * t))
        frames[t, y : y + OBJECT, x : x + OBJECT] = square
        if t:
            flow[t - 1, y : y + OBJECT, x : x + OBJECT] = MOTION
    grey = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., np.newaxis], 3, axis=3), flow


def budget_for(frames: int, config: IdtConfig, height: int, width: int) -> float:
    """The budget (MiB) that gives the IDT stage windows of ``frames`` frames of that size."""
    pixels = height * width
    rows = stage.ROW_CHUNK_COPIES * stage.ROWS_PER_CHUNK * config.columns().row_dim * 4
    working = stage.WORKING_BYTES_PER_PIXEL * pixels + rows
    return (working + frames * stage.WINDOW_BYTES_PER_PIXEL * pixels) / 2**20


@pytest.mark.parametrize(("mode", "dtype"), [("reference", "float32"), ("pipeline", "float16")])
def test_a_video_read_in_windows_gives_the_trajectories_of_the_whole_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, dtype: str
) -> None:
    frames, flow = moving_object(33)
    layout = RunLayout.at(tmp_path)
    layout.store("frames").write("v", frames)
    layout.store("flow").write("v", quantize_flow(flow, 20.0), attrs={"flow_bound": 20.0})
    config = IdtConfig(mode=mode, dtype=dtype)
    reads: list[tuple[int, int]] = []
    read_range = VideoArrayStore.read_range

    def recording(store: VideoArrayStore, video_id: str, start: int, stop: int) -> np.ndarray:
        if store.url == layout.path("frames.zarr"):
            reads.append((start, stop))
        return read_range(store, video_id, start, stop)

    monkeypatch.setattr(VideoArrayStore, "read_range", recording)

    [outcome] = stage.extract_idt_videos(["v"], layout, config, budget_for(5, config, 64, 96))

    assert outcome.status == "done"
    assert reads == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30), (30, 33)]
    whole_flow = dequantize_flow(quantize_flow(flow, 20.0), 20.0) if mode == "pipeline" else None
    whole = extract_trajectories(frames, config, flows=whole_flow)
    assert len(whole.trajectories) > 30
    stored = layout.store("idt")
    np.testing.assert_array_equal(stored.read("v"), whole.trajectories.astype(dtype))
    record = stored.attrs("v")
    assert record["counts_per_frame"] == whole.counts_per_frame.tolist()
    assert (record["frames"], record["mode"], record["dtype"]) == (33, mode, dtype)


def test_pipeline_mode_refuses_flow_of_another_shape(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    layout.store("frames").write("v", moving_object(5)[0])
    layout.store("flow").write("v", np.full((3, 64, 96, 2), 128, np.uint8), attrs={"flow_bound": 20.0})
    [outcome] = stage.extract_idt_videos(["v"], layout, IdtConfig(mode="pipeline"))
    assert outcome.status == "failed"
    assert "needs flows of shape (4, 64, 96, 2); got shape (3, 64, 96, 2)" in outcome.error
