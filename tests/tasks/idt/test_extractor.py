"""Improved Dense Trajectories: synthetic motion, camera compensation, the reference release's output."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import REFERENCE_DATA, sample_video

from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.descriptors import FrameDescriber
from motionfit.tasks.idt.extractor import (
    VideoInputError,
    extract_trajectories,
    extract_video_trajectories,
    read_boxes,
)
from motionfit.tasks.idt.pyramid_flow import FarnebackPyramid, scale_pyramid

REFERENCE_NAME = "idt_reference_carphone_pristine.npz"
REFERENCE_PATH = REFERENCE_DATA / REFERENCE_NAME
SHAPE = slice(10, 40)
BLOCKS = {
    "shape": SHAPE,
    "hog": slice(40, 136),
    "hof": slice(136, 244),
    "mbhx": slice(244, 340),
    "mbhy": slice(340, 436),
}


def textured_scene(size: int, seed: int) -> np.ndarray:
    """A smooth random texture ``[size, size] float32`` in 0..255 (blurred noise: Farnebäck-friendly)."""
    noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)


def translating_video(
    motion: tuple[float, float], n_frames: int = 20, size: int = 64, seed: int = 0
) -> np.ndarray:
    """``[T, size, size] uint8``: a window moving over a larger texture, so the content translates by
    ``motion`` (x, y) px per frame."""
    scene = textured_scene(size * 3, seed)
    frames = []
    for t in range(n_frames):
        shift = np.float32([[1, 0, size - motion[0] * t], [0, 1, size - motion[1] * t]])
        frame = cv2.warpAffine(scene, np.linalg.inv(np.vstack([shift, [0, 0, 1]]))[:2], (size, size))
        frames.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_tracks_follow_a_translating_pattern_and_hof_points_along_it() -> None:
    motion = (1.3, 1.1)  # 40 degrees: mostly HOF bin 1 (45 degrees) of 8
    frames = translating_video(motion)
    result = extract_trajectories(frames, IdtConfig(camera_motion=False))
    rows = result.trajectories
    assert rows.shape[1] == 436 and rows.dtype == np.float32 and len(rows) > 50
    assert result.counts_per_frame.sum() == len(rows) and result.counts_per_frame[:15].sum() == 0
    speed = float(np.hypot(*motion))
    np.testing.assert_allclose(np.median(rows[:, 5]), 15 * speed, rtol=0.05)  # track length, px
    shape = rows[:, SHAPE].reshape(-1, 15, 2)
    np.testing.assert_allclose(
        np.median(shape, axis=0), np.tile(np.divide(motion, 15 * speed), (15, 1)), atol=0.005
    )
    hof = rows[:, BLOCKS["hof"]].reshape(-1, 3 * 4, 9)
    dominant = np.bincount(hof.argmax(axis=2).ravel(), minlength=9) / hof[..., 0].size
    assert dominant[1] > 0.9


def test_mbh_is_flat_under_uniform_flow_and_marks_a_motion_boundary() -> None:
    layout = IdtConfig().layout()
    describer = FrameDescriber(layout, 64, 64, epsilon=0.05, min_flow=0.4)
    grey = textured_scene(64, 1).astype(np.uint8)
    points = np.array([[32.0, 32.0]], dtype=np.float32)
    uniform = np.stack([np.full((64, 64), 1.5, np.float32), np.full((64, 64), 1.4, np.float32)])
    frame = describer.describe(describer.integral_histograms(grey, uniform), points)[0]
    hof, mbhx, mbhy = frame[32:68].reshape(4, 9), frame[68:100], frame[100:132]
    np.testing.assert_allclose(mbhx, np.sqrt(1 / 32), rtol=1e-5)  # only the epsilon: no motion boundary
    np.testing.assert_allclose(mbhy, np.sqrt(1 / 32), rtol=1e-5)
    assert (hof.argmax(axis=1) == 1).all()  # flow (1.5, 1.4) points at 43 degrees: bin 1 (45) of 8
    boundary = np.zeros((2, 64, 64), dtype=np.float32)
    boundary[0, :, :32] = 2.0  # left half moves right, right half is still: d(flow_x)/dx < 0 at x = 32
    frame = describer.describe(describer.integral_histograms(grey, boundary), points)[0]
    mbhx = frame[68:100].reshape(4, 8)  # cells (x0 y0), (x0 y1), (x1 y0), (x1 y1)
    assert (mbhx.argmax(axis=1) == 4).all()  # gradient points at 180 degrees
    np.testing.assert_allclose(frame[100:132], np.sqrt(1 / 32), rtol=1e-5)


def test_hof_wraps_from_the_last_bin_to_the_first_and_counts_still_pixels_in_its_zero_bin() -> None:
    layout = IdtConfig().layout()
    describer = FrameDescriber(layout, 64, 64, epsilon=0.05, min_flow=0.4)
    grey = textured_scene(64, 1).astype(np.uint8)
    points = np.array([[16.0, 16.0]], dtype=np.float32)  # patch: pixels 0..31 in x and y
    angle = np.deg2rad(337.5)  # half way between bin 7 (315 degrees) and bin 0 (360 = 0 degrees)
    flow = np.stack([np.full((64, 64), 2 * np.cos(angle)), np.full((64, 64), 2 * np.sin(angle))])
    flow = flow.astype(np.float32)
    flow[:, :, :16] = 0.2  # cells with x in 0..15: magnitude 0.28, at most min_flow (0.4): zero bin only
    hof = describer.describe(describer.integral_histograms(grey, flow), points)[0, 32:68].reshape(2, 2, 9)
    moving, still = 256 * 1.0 + 0.05, 256 + 0.05  # per pixel: magnitude 2 split 1 / 1; still: weight 1
    total = 2 * (2 * moving + 7 * 0.05) + 2 * (still + 8 * 0.05)
    expected_moving = np.full(9, np.sqrt(0.05 / total))
    expected_moving[[0, 7]] = np.sqrt(moving / total)
    expected_still = np.full(9, np.sqrt(0.05 / total))
    expected_still[8] = np.sqrt(still / total)
    np.testing.assert_allclose(hof[1], np.stack([expected_moving] * 2), rtol=0.02)  # x cell 1: moving
    np.testing.assert_allclose(hof[0], np.stack([expected_still] * 2), rtol=1e-5)  # x cell 0: still


def test_farneback_pyramid_reproduces_opencv_farneback_without_the_median_filter() -> None:
    frames = translating_video((0.7, -0.4), n_frames=2, size=96)
    pyramid = scale_pyramid(96, 96, max_scales=8, scale_stride=np.sqrt(2), patch_size=32)
    farneback = FarnebackPyramid(pyramid, 7, 1.5, 10, 2, median_ksize=1, scale_stride=np.sqrt(2))
    ours = farneback.flow(farneback.expand(frames[0]), farneback.expand(frames[1]))[0]
    opencv = cv2.calcOpticalFlowFarneback(
        frames[0],
        frames[1],
        None,
        1 / np.sqrt(2),
        pyramid.n_scales - 1,
        10,
        2,
        7,
        1.5,
        cv2.OPTFLOW_FARNEBACK_GAUSSIAN,
    )
    assert pyramid.sizes == ((96, 96), (68, 68), (48, 48), (34, 34))
    assert np.abs(np.moveaxis(ours, 0, -1) - opencv).max() < 1e-3


def test_camera_pan_over_a_static_scene_leaves_almost_no_tracks() -> None:
    frames = translating_video((1.5, 0.5), seed=2)
    compensated = extract_trajectories(frames, IdtConfig())
    uncompensated = extract_trajectories(frames, IdtConfig(camera_motion=False))
    assert len(uncompensated.trajectories) > 100
    assert len(compensated.trajectories) < 0.05 * len(uncompensated.trajectories)
    # Boxes over the whole frame leave no matches for the homography: the pan is no longer compensated.
    boxes = np.array([[t, 0, 0, 63, 63, 1.0] for t in range(len(frames))], dtype=np.float32)
    masked = extract_trajectories(frames, IdtConfig(), boxes=boxes)
    assert len(masked.trajectories) > 0.5 * len(uncompensated.trajectories)


def test_pipeline_mode_tracks_with_given_flow_and_compensates_it() -> None:
    motion = (1.5, 0.5)
    frames = translating_video(motion, seed=3)
    flows = np.broadcast_to(np.float32(motion), (len(frames) - 1, 64, 64, 2)).copy()
    tracked = extract_trajectories(frames, IdtConfig(mode="pipeline", camera_motion=False), flows=flows)
    np.testing.assert_allclose(tracked.trajectories[:, 5], 15 * np.hypot(*motion), rtol=1e-4)
    compensated = extract_trajectories(frames, IdtConfig(mode="pipeline"), flows=flows)
    assert len(compensated.trajectories) < 0.05 * len(tracked.trajectories)


def _reference_rows() -> np.ndarray:
    return np.load(REFERENCE_PATH)["trajectories"]


def _carphone() -> Path:
    return sample_video("carphone_pristine.mp4")


@pytest.fixture(scope="module")
def carphone_rows() -> tuple[np.ndarray, np.ndarray]:
    """Our trajectories and the reference release's on carphone (176x144, 120 frames, SIFT build)."""
    return extract_video_trajectories(_carphone(), IdtConfig()).trajectories, _reference_rows()


def test_per_frame_counts_match_the_reference_release(carphone_rows: tuple[np.ndarray, np.ndarray]) -> None:
    ours, reference = carphone_rows
    counts = np.bincount(ours[:, 0].astype(int), minlength=120)
    expected = np.bincount(reference[:, 0].astype(int), minlength=120)
    # Measured: 2135 vs 2134 rows, per-frame differences of at most 2 (camera homographies differ slightly).
    assert abs(len(ours) / len(reference) - 1) < 0.02
    assert np.abs(counts - expected).max() <= 4


def test_matched_descriptors_match_the_reference_release(
    carphone_rows: tuple[np.ndarray, np.ndarray],
) -> None:
    ours, reference = carphone_rows
    matched_ours, matched_reference = [], []
    for frame in np.unique(reference[:, 0]):
        a = np.flatnonzero(ours[:, 0] == frame)
        b = np.flatnonzero(reference[:, 0] == frame)
        if len(a) == 0:
            continue
        distance = np.linalg.norm(ours[a, None, 1:3] - reference[None, b, 1:3], axis=2)
        distance += 1e3 * (np.abs(ours[a, None, 6] - reference[None, b, 6]) > 1e-3)  # same scale
        nearest = distance.argmin(axis=1)
        close = distance[np.arange(len(a)), nearest] < 1.0
        matched_ours.append(ours[a[close]])
        matched_reference.append(reference[b[nearest[close]]])
    ours, reference = np.concatenate(matched_ours), np.concatenate(matched_reference)
    assert len(ours) > 0.97 * 2134  # measured 99.8 % of the reference rows
    # std x, std y, length: the tracking itself is the release's (measured: 99.9 % of rows within 1e-3).
    assert np.isclose(ours[:, 3:6], reference[:, 3:6], rtol=1e-3, atol=1e-3).all(axis=1).mean() > 0.99
    for name, columns in BLOCKS.items():
        a, b = ours[:, columns], reference[:, columns]
        cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        # Measured mean cosine: shape 0.9989, HOG 1.0000, HOF/MBHx/MBHy 0.9999.
        assert cosine.mean() > 0.995, name


def test_unreadable_or_malformed_input_is_refused(tmp_path: Path) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video")
    with pytest.raises(VideoInputError, match=re.escape(str(not_a_video))):
        extract_video_trajectories(not_a_video, IdtConfig())
    with pytest.raises(VideoInputError, match="at least 2"):
        extract_trajectories(np.zeros((1, 64, 64), np.uint8), IdtConfig())
    with pytest.raises(VideoInputError, match="uint8"):
        extract_trajectories(np.zeros((4, 64, 64), np.float32), IdtConfig())
    with pytest.raises(VideoInputError, match="pipeline mode needs flows"):
        extract_trajectories(np.zeros((4, 64, 64), np.uint8), IdtConfig(mode="pipeline"))
    boxes = tmp_path / "boxes.txt"
    boxes.write_text("0 1 2 30 40 0.9\n1\n2 1 2 3\n")
    with pytest.raises(VideoInputError, match=re.escape("boxes.txt:3")):
        read_boxes(boxes, n_frames=3)


def test_read_boxes_parses_the_reference_format(tmp_path: Path) -> None:
    path = tmp_path / "boxes.txt"
    path.write_text("0 1 2 30 40 0.9 5 6 7 8 0.5\n1\n\n2 10 20 30 40 1\n")
    boxes = read_boxes(path, n_frames=3)
    np.testing.assert_allclose(
        boxes, [[0, 1, 2, 30, 40, 0.9], [0, 5, 6, 7, 8, 0.5], [2, 10, 20, 30, 40, 1]], rtol=1e-6
    )
    with pytest.raises(VideoInputError, match="outside"):
        read_boxes(path, n_frames=2)
