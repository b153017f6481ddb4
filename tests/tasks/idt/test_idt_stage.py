"""The IDT stage: a video read in windows gives the trajectories of the whole video, in either flow mode."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from motionfit.storage.arrays import VideoArrayStore
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
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


def test_human_boxes_land_on_the_decoded_frames_they_were_decoded_from(tmp_path: Path) -> None:
    path = tmp_path / "v.bb"
    path.write_text("0 10 20 110 220 0.9\n1 0 0 5 5 1\n4 40 40 80 80 1 160 0 320 240 0.5\n")
    record = {"source_n_frames": 6, "source_fps": 30.0, "source_width": 320, "source_height": 240}
    # 30 fps capped to 15 keeps source frames 0, 2 and 4, at a fifth of their size.
    per_frame = stage.decoded_frame_boxes(str(path), record, DecodeConfig(max_fps=15), 3, 48, 64)
    np.testing.assert_allclose(per_frame[0], [[2, 4, 22, 44]])
    assert per_frame[1] is None  # source frame 2 has none; frame 1's went with frame 1
    np.testing.assert_allclose(per_frame[2], [[8, 8, 16, 16], [32, 0, 64, 48]])


def panning_video(n_frames: int, height: int = 64, width: int = 96) -> np.ndarray:
    """A textured scene seen by a camera panning 1 px per frame to the right: ``[T, H, W, 3] uint8``."""
    scene = np.clip(np.rint(texture(height, width + n_frames, 4)), 0, 255).astype(np.uint8)
    frames = np.stack([scene[:, t : t + width] for t in range(n_frames)])
    return np.repeat(frames[..., np.newaxis], 3, axis=3)


def test_human_boxes_reach_the_camera_motion_estimate_and_key_only_their_video(tmp_path: Path) -> None:
    frames = panning_video(20)
    layout = RunLayout.at(tmp_path)
    source = {
        "fps": 25.0,
        "source_fps": 25.0,
        "source_n_frames": 20,
        "source_width": 192,
        "source_height": 128,
    }
    for video_id in ("boxed", "plain"):
        layout.store("frames").write(video_id, frames, attrs=source)
    boxes = tmp_path / "boxed.bb"  # the whole frame at the file's size: no match is left for the homography
    boxes.write_text("".join(f"{t} 0 0 191 127 1\n" for t in range(20)))
    config, decode = IdtConfig(human_boxes=True), DecodeConfig()
    run = {"boxes": {"boxed": str(boxes)}, "decode": decode}

    def stored(video_id: str) -> np.ndarray:  # a store of its own: one keeps the handles it opened
        return layout.store("idt").read(video_id)

    outcomes = stage.extract_idt_videos(["boxed", "plain"], layout, config, **run)

    assert [outcome.status for outcome in outcomes] == ["done", "done"]

    whole_frame = np.array([[t, 0, 0, 95, 63, 1] for t in range(20)], np.float32)
    np.testing.assert_array_equal(
        stored("boxed"), extract_trajectories(frames, config, boxes=whole_frame).trajectories
    )
    plain = extract_trajectories(frames, IdtConfig()).trajectories
    np.testing.assert_array_equal(stored("plain"), plain)
    assert len(stored("boxed")) > 10 * max(len(plain), 1)  # the pan is no longer compensated
    assert [o.status for o in stage.extract_idt_videos(["boxed", "plain"], layout, config, **run)] == [
        "skipped",
        "skipped",
    ]
    boxes.write_text("".join(f"{t} 0 0 20 20 1\n" for t in range(20)))  # new boxes: that video only
    again = stage.extract_idt_videos(["boxed", "plain"], layout, config, **run)
    assert [outcome.status for outcome in again] == ["done", "skipped"]
    # Boxes off: the key of a run without them, so "plain" stays and "boxed" is recomputed without boxes.
    off = stage.extract_idt_videos(["boxed", "plain"], layout, IdtConfig())
    assert [outcome.status for outcome in off] == ["done", "skipped"]
    np.testing.assert_array_equal(stored("boxed"), plain)
    boxes.write_text("0 1 2 3\n")
    [broken] = stage.extract_idt_videos(["boxed"], layout, config, **run)
    assert broken.status == "failed" and "boxed.bb:1" in broken.error
