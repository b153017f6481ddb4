"""Tests of the synthetic motion data set: determinism, motion semantics, class-blind appearance, files."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from motionfit.config import load_config
from motionfit.tasks.data.config import MOTION_CLASSES, SynthConfig
from motionfit.tasks.data.synth import (
    SynthError,
    SynthLayout,
    VideoSpec,
    discard_other_dataset,
    generate_dataset,
    motion_trajectory,
    object_boxes,
    plan_dataset,
    render_video,
    sample_motion,
    video_rngs,
    write_mp4,
)
from motionfit.tasks.data.synth_render import shape_alpha, shape_polygon, sprite_pyramid, warp_sprite


def _test_config(**overrides: object) -> SynthConfig:
    values: dict[str, object] = {
        "frame_size_px": (32, 32),
        "n_frames": 8,
        "classes": ["TranslateLeft", "RotateClockwise", "ZoomIn"],
        "n_train_per_class": 2,
        "n_test_per_class": 2,
        "n_source_per_class": 3,
        "clips_per_group": 2,
    }
    values.update(overrides)
    return SynthConfig(**values)


def _decode(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.array(frames)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0**2 / mse))


def test_render_is_deterministic_by_seed_and_index() -> None:
    config = _test_config()
    spec = VideoSpec("train", 3, "TranslateLeft", "unused.mp4")
    video = render_video(spec, config)
    assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8
    assert np.array_equal(video, render_video(spec, config))
    assert not np.array_equal(video, render_video(spec, _test_config(seed=1)))
    assert not np.array_equal(video, render_video(VideoSpec("train", 4, "TranslateLeft", "x.mp4"), config))
    assert not np.array_equal(video, render_video(VideoSpec("source", 3, "TranslateLeft", "x.mp4"), config))


def test_mid_clip_frame_does_not_depend_on_the_class() -> None:
    config = _test_config(n_frames=9, classes=list(MOTION_CLASSES))
    videos = {name: render_video(VideoSpec("source", 7, name, "x.mp4"), config) for name in MOTION_CLASSES}
    reference = videos["TranslateLeft"]
    for name, video in videos.items():
        assert np.array_equal(video[4], reference[4]), name
        if name != "TranslateLeft":
            assert not np.array_equal(video, reference), f"{name} renders the same clip as TranslateLeft"


def test_appearance_statistics_do_not_predict_the_class() -> None:
    """Between-class variance of per-video mean colour is of the order of the within-class variance."""
    config = _test_config(classes=list(MOTION_CLASSES))
    n_per_class = 24
    features = np.array(
        [
            [
                render_video(VideoSpec("source", c * n_per_class + i, name, "x.mp4"), config).mean(
                    axis=(0, 1, 2)
                )
            ]
            for c, name in enumerate(MOTION_CLASSES)
            for i in range(n_per_class)
        ]
    ).reshape(len(MOTION_CLASSES), n_per_class, 3)
    class_means = features.mean(axis=1)
    between = n_per_class * class_means.var(axis=0, ddof=1)
    within = features.var(axis=1, ddof=1).mean(axis=0)
    f_ratio = between / within
    # F(9, 230) exceeds 2.5 with probability ~1 % under independence; a shift of 3 grey levels per class
    # index already reaches it.
    assert np.all(f_ratio < 2.5), f_ratio


def _flat_scene_config(**overrides: object) -> SynthConfig:
    """Every class on a flat, still, noiseless background: the pixels that differ from it are the object."""
    values: dict[str, object] = {
        "frame_size_px": (48, 48),
        "n_frames": 10,
        "background_contrast": 0.0,
        "noise_std": 0.0,
        "camera_pan_px_per_frame": 0.0,
        "classes": list(MOTION_CLASSES),
    }
    return _test_config(**{**values, **overrides})


def test_translation_and_zoom_move_the_object_as_named() -> None:
    config = _flat_scene_config(object_size_px=(12.0, 12.0))
    expected_axis = {
        "TranslateLeft": (0, -1),
        "TranslateRight": (0, 1),
        "TranslateUp": (1, -1),
        "TranslateDown": (1, 1),
    }
    for index in range(4):
        for name, (axis, sign) in expected_axis.items():
            video = render_video(VideoSpec("train", index, name, "x.mp4"), config).astype(np.float32)
            mask = np.abs(video - video[:, :1, :1]).max(axis=3) > 8
            ys, xs = np.mgrid[:48, :48]
            centroid = np.stack(
                [(mask * xs).sum((1, 2)) / mask.sum((1, 2)), (mask * ys).sum((1, 2)) / mask.sum((1, 2))],
                axis=1,
            )
            slope = np.polyfit(np.arange(10), centroid[:, axis], 1)[0]
            assert 0.8 < sign * slope < 1.8, (name, index, slope)
            other = np.polyfit(np.arange(10), centroid[:, 1 - axis], 1)[0]
            assert abs(other) < 0.3, (name, index, other)
        areas = {}
        for name in ("ZoomIn", "ZoomOut"):
            video = render_video(VideoSpec("train", index, name, "x.mp4"), config).astype(np.float32)
            areas[name] = (np.abs(video - video[:, :1, :1]).max(axis=3) > 8).sum((1, 2))
        assert areas["ZoomIn"][-1] > 2.5 * areas["ZoomIn"][0]
        assert areas["ZoomOut"][0] > 2.5 * areas["ZoomOut"][-1]


def test_object_boxes_hold_the_object_on_every_frame() -> None:
    config = _flat_scene_config()
    ys, xs = np.mgrid[:48, :48]
    for name in MOTION_CLASSES:
        spec = VideoSpec("train", 1, name, "x.mp4")
        video = render_video(spec, config).astype(np.float32)
        boxes = object_boxes(spec, config)
        assert boxes.shape == (10, 4)
        mask = np.abs(video - video[:, :1, :1]).max(axis=3) > 2  # the object on a flat background
        x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
        inside = (xs >= np.floor(x1)) & (xs <= np.ceil(x2)) & (ys >= np.floor(y1)) & (ys <= np.ceil(y2))
        assert mask.any(axis=(1, 2)).all(), name
        assert not (mask & ~inside).any(), name
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert (mask.sum((1, 2)) > 0.25 * area).all(), name  # a box about the object, not the frame


def test_generate_dataset_writes_each_video_s_object_boxes(tmp_path: Path) -> None:
    config = _test_config()
    generate_dataset(tmp_path, config)
    layout = SynthLayout(tmp_path)
    specs = plan_dataset(config)
    assert sorted(path.name for path in layout.boxes.iterdir()) == sorted(
        f"{Path(spec.relative_path).stem}.bb" for spec in specs
    )
    spec = specs[3]
    lines = layout.boxes_path(spec).read_text().splitlines()
    values = np.array([line.split() for line in lines], dtype=np.float64)
    assert values[:, 0].tolist() == list(range(8)) and (values[:, 5] == 1).all()
    np.testing.assert_allclose(values[:, 1:5], object_boxes(spec, config), atol=0.006)
    layout.boxes_path(spec).unlink()  # a data set from before the boxes: its videos stay, boxes are added
    assert generate_dataset(tmp_path, config).n_written == 0
    assert layout.boxes_path(spec).read_text().splitlines() == lines


def test_trajectories_follow_their_class() -> None:
    config = _test_config(n_frames=16)
    _, motion_rng = video_rngs(0, "train", 0)
    params = sample_motion(motion_rng, config)
    t = np.arange(16) - 7.5
    circle = motion_trajectory("CircularPath", params, 10.0, 16).displacement_xy
    circle_centre = -params.path_radius_px * np.array(
        [np.cos(params.path_start_rad), np.sin(params.path_start_rad)]
    )
    np.testing.assert_allclose(
        np.linalg.norm(circle - circle_centre, axis=1), params.path_radius_px, rtol=1e-9
    )
    step = np.linalg.norm(np.diff(circle, axis=0), axis=1)
    assert np.all(np.abs(step - params.speed_px_per_frame) < 0.05 * params.speed_px_per_frame)

    wave = motion_trajectory("Oscillate", params, 10.0, 16).displacement_xy
    along = wave @ np.array([np.cos(params.oscillation_axis_rad), np.sin(params.oscillation_axis_rad)])
    np.testing.assert_allclose(np.linalg.norm(wave, axis=1), np.abs(along), atol=1e-9)
    assert np.any(np.diff(np.sign(np.diff(along))) != 0), "an oscillation must reverse within 16 frames"

    clockwise = motion_trajectory("RotateClockwise", params, 10.0, 16)
    np.testing.assert_allclose(clockwise.rotation_rad, params.speed_px_per_frame * t / 5.0)
    counter = motion_trajectory("RotateCounterClockwise", params, 10.0, 16)
    np.testing.assert_allclose(counter.rotation_rad, -clockwise.rotation_rad)
    zoom = motion_trajectory("ZoomIn", params, 10.0, 16).scale
    assert zoom[-1] / zoom[0] == pytest.approx(params.zoom_ratio)
    with pytest.raises(ValueError, match="Jump"):
        motion_trajectory("Jump", params, 10.0, 16)


def test_growing_angle_turns_the_sprite_clockwise_on_screen() -> None:
    """Image moments: orientation 0.5 * atan2(2 mu11, mu20 - mu02) grows clockwise when y points down."""
    rng = np.random.default_rng(0)
    alpha = shape_alpha(shape_polygon("ellipse", rng), 32)
    sprite = sprite_pyramid(alpha, np.zeros_like(alpha), np.ones((2, 3), np.float32), 1)
    orientations = []
    for angle in (0.0, 0.4):
        layer = warp_sprite(sprite, np.array([20.0, 20.0]), 20.0, angle, (40, 40))
        moments = cv2.moments(layer[..., 3])
        orientations.append(0.5 * np.arctan2(2 * moments["mu11"], moments["mu20"] - moments["mu02"]))
    assert orientations[1] - orientations[0] == pytest.approx(0.4, abs=0.02)


def test_generate_dataset_writes_ucf101_layout(tmp_path: Path) -> None:
    config = _test_config()
    summary = generate_dataset(tmp_path, config)
    layout = SynthLayout(tmp_path)
    assert (summary.n_train, summary.n_test, summary.n_source, summary.n_written) == (6, 6, 9, 21)

    splits = layout.target_splits
    assert (splits / "classInd.txt").read_text().splitlines() == [
        "1 TranslateLeft",
        "2 RotateClockwise",
        "3 ZoomIn",
    ]
    train_lines = (splits / "trainlist01.txt").read_text().splitlines()
    test_lines = (splits / "testlist01.txt").read_text().splitlines()
    for number, name in enumerate(config.classes, start=1):
        assert sum(line.startswith(f"{name}/") and line.endswith(f" {number}") for line in train_lines) == 2
        assert sum(line.startswith(f"{name}/") for line in test_lines) == 2
    pattern = re.compile(r"^(\w+)/v_\1_g\d{2}_c\d{2}\.mp4$")
    listed = [line.split()[0] for line in train_lines] + test_lines
    assert all(pattern.match(relative) for relative in listed)
    assert not {line.split()[0] for line in train_lines} & set(test_lines)
    assert all((layout.target_videos / relative).is_file() for relative in listed)

    source_files = sorted(path.name for path in layout.source_videos.iterdir())
    assert len(source_files) == 9 and all(re.fullmatch(r"src_\d{6}\.mp4", name) for name in source_files)
    assert all(path.is_file() for path in layout.source_videos.iterdir()), "the source folder must be flat"
    with layout.source_heldout_labels.open() as handle:
        heldout = list(csv.DictReader(handle))
    assert sorted(Path(row["path"]).name for row in heldout) == source_files
    assert sorted(row["label"] for row in heldout) == sorted(config.classes * 3)

    spec = plan_dataset(config)[0]
    decoded = _decode(layout.video_path(spec))
    assert decoded.shape == (8, 32, 32, 3)
    assert _psnr(decoded, render_video(spec, config)) > 25.0
    assert not layout.partial.exists()


def test_generate_dataset_resumes_and_refuses_another_config(tmp_path: Path) -> None:
    config = _test_config()
    generate_dataset(tmp_path, config)
    victim = SynthLayout(tmp_path).video_path(plan_dataset(config)[5])
    victim.unlink()
    summary = generate_dataset(tmp_path, config)
    assert (summary.n_written, summary.n_skipped) == (1, 20)
    assert _decode(victim).shape == (8, 32, 32, 3)
    with pytest.raises(SynthError, match="different config"):
        generate_dataset(tmp_path, _test_config(seed=5))
    assert not discard_other_dataset(tmp_path, config) and victim.exists()  # same config: kept
    assert discard_other_dataset(tmp_path, _test_config(seed=5)) and not tmp_path.exists()
    assert generate_dataset(tmp_path, _test_config(seed=5)).n_written == 21
    (tmp_path / "mine").mkdir()  # a folder the generator did not make is never deleted
    assert not discard_other_dataset(tmp_path / "mine", config) and (tmp_path / "mine").exists()


def test_parallel_generation_matches_serial(tmp_path: Path) -> None:
    config = _test_config(classes=["TranslateUp", "Oscillate"], n_train_per_class=1, n_test_per_class=1)
    generate_dataset(tmp_path / "serial", config)
    generate_dataset(tmp_path / "parallel", config, n_workers=2)
    for spec in plan_dataset(config):
        serial = _decode(SynthLayout(tmp_path / "serial").video_path(spec))
        assert np.array_equal(serial, _decode(SynthLayout(tmp_path / "parallel").video_path(spec)))


def test_source_plan_is_balanced_shuffled_and_class_blind() -> None:
    config = SynthConfig(seed=3)  # the defaults: the small scale
    source = [spec for spec in plan_dataset(config) if spec.role == "source"]
    labels = [spec.class_name for spec in source]
    assert {name: labels.count(name) for name in config.classes} == dict.fromkeys(config.classes, 60)
    assert labels[:60] != [labels[0]] * 60
    assert all(name not in spec.relative_path for spec in source for name in MOTION_CLASSES)
    assert len(plan_dataset(load_config(preset="tiny").synth)) == 5 * (6 + 8 + 12)


def test_config_and_writer_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="classes"):
        SynthConfig(classes=["TranslateLeft", "Jump"])
    with pytest.raises(ValidationError, match="even"):
        SynthConfig(frame_size_px=(33, 32))
    with pytest.raises(ValidationError, match="low <= high"):
        SynthConfig(speed_px_per_frame=(2.0, 1.0))
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(np.zeros((2, 16, 16, 3), np.float32), tmp_path / "x.mp4", 25.0)
    with pytest.raises(ValueError, match="role"):
        video_rngs(0, "validation", 0)


def test_background_colour_range_bounds_the_spread_of_background_colours() -> None:
    def corner_colours(**overrides: object) -> np.ndarray:
        config = _test_config(background_contrast=0.0, noise_std=0.0, **overrides)
        specs = [VideoSpec("source", index, "TranslateLeft", "x.mp4") for index in range(12)]
        return np.stack([render_video(spec, config)[0, 0, 0] for spec in specs]).astype(np.float64) / 255.0

    wide = corner_colours()
    narrow = corner_colours(background_colour_range=(0.45, 0.55))
    # A flat background is the two colours' mix times a brightness of 0.75-1.25.
    assert np.all((narrow >= 0.45 * 0.75 - 0.01) & (narrow <= 0.55 * 1.25 + 0.01)), narrow
    assert narrow.std(axis=0).max() < 0.3 * wide.std(axis=0).min(), (narrow.std(axis=0), wide.std(axis=0))
    with pytest.raises(ValidationError):
        SynthConfig(background_colour_range=(0.5, 1.2))
