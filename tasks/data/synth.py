"""The bundled synthetic data set: action classes defined by motion alone, written as mp4 in UCF101 layout.

A video shows one textured object over a textured background. Its class is the object's *motion*
(translation left/right/up/down, rotation clockwise/counter-clockwise, zoom in/out, a circular path, an
oscillation); everything else (shape, texture, colours, size, mid-clip position and orientation,
background, camera pan, noise) is drawn from a random stream that never sees the class. With an odd
number of frames the middle frame of a video is therefore identical whatever its class: appearance
carries no class information and motion is the only cue.

Every video is rendered from its own seed, derived from (global seed, role, index), so generation runs in
any order, in parallel, and resumes after a crash: a video file appears under its final name only once
it has been written and decoded back.

Layout written by :func:`generate_dataset` (``<out>`` is the output folder)::

    <out>/synth_config.json                       the SynthConfig that made this folder
    <out>/target/videos/<Class>/v_<Class>_gNN_cMM.mp4
    <out>/target/splits/classInd.txt              "1 TranslateLeft" lines
    <out>/target/splits/trainlist01.txt           "TranslateLeft/v_TranslateLeft_g02_c01.mp4 1" lines
    <out>/target/splits/testlist01.txt            "TranslateLeft/v_TranslateLeft_g01_c01.mp4" lines
    <out>/source/videos/src_000123.mp4            unlabelled, class-blind names, shuffled order
    <out>/source/heldout_labels.csv               path,label (diagnostics only, never for training)
    <out>/boxes/<video file stem>.bb              the object's box per frame (the IDT release's human
                                                  box format, for the IDT stage's idt.human_boxes)

Groups ``gNN`` are naming only (as in UCF101, test groups come first); appearance is not shared within a
group. Only split 1 exists.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, Field

from motionfit.storage import fs
from motionfit.tasks.data.config import MOTION_CLASSES, SynthConfig
from motionfit.tasks.data.synth_render import (
    SHAPES,
    SPRITE_FILL,
    TEXTURES,
    background_texture,
    composite,
    crop_background,
    shape_alpha,
    shape_polygon,
    sprite_pyramid,
    texture_pattern,
    warp_sprite,
)

logger = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("train", "test", "source")
_ROLE_CODES = {"train": 0, "test": 1, "source": 2}
_SOURCE_ORDER_CODE = 3
_MP4_FOURCC = "mp4v"


class SynthError(RuntimeError):
    """Raised when the synthetic data set cannot be written (encoder failure, conflicting folder)."""


@dataclass(frozen=True)
class VideoSpec:
    """One video to render: its ``role`` ("train", "test", "source"), ``index`` within that role (which
    fixes its seed), motion class, and file path relative to the role's ``videos`` folder."""

    role: str
    index: int
    class_name: str
    relative_path: str


@dataclass(frozen=True)
class SynthLayout:
    """Paths of a synthetic data set folder (see the module docstring)."""

    root: Path

    @property
    def config_json(self) -> Path:
        return self.root / "synth_config.json"

    @property
    def target_videos(self) -> Path:
        return self.root / "target" / "videos"

    @property
    def target_splits(self) -> Path:
        return self.root / "target" / "splits"

    @property
    def source_videos(self) -> Path:
        return self.root / "source" / "videos"

    @property
    def source_heldout_labels(self) -> Path:
        return self.root / "source" / "heldout_labels.csv"

    @property
    def boxes(self) -> Path:
        """The object's box per frame of every video, ``<video file stem>.bb`` (the IDT release's format)."""
        return self.root / "boxes"

    def boxes_path(self, spec: VideoSpec) -> Path:
        return self.boxes / f"{Path(spec.relative_path).stem}.bb"

    @property
    def partial(self) -> Path:
        """Scratch folder for videos being written (renamed into place when complete)."""
        return self.root / ".partial"

    def video_path(self, spec: VideoSpec) -> Path:
        videos = self.source_videos if spec.role == "source" else self.target_videos
        return videos / spec.relative_path


class SynthSummary(BaseModel):
    """What :func:`generate_dataset` produced."""

    root: Path
    class_names: list[str]
    n_train: int
    n_test: int
    n_source: int
    n_written: int = Field(description="Videos rendered by this call.")
    n_skipped: int = Field(description="Videos already present (a resumed run).")


@dataclass(frozen=True)
class _Appearance:
    """Class-independent content of one video."""

    sprite_alpha: np.ndarray
    sprite_pattern: np.ndarray
    object_colours: np.ndarray
    diameter_px: float
    angle_rad: float
    centre_xy: np.ndarray
    background: np.ndarray
    background_pad_px: int
    pan_xy: np.ndarray
    noise: np.ndarray | None


@dataclass(frozen=True)
class MotionParams:
    """Motion parameters, drawn identically for every class; the class picks which ones it uses."""

    speed_px_per_frame: float
    zoom_ratio: float
    path_radius_px: float
    path_start_rad: float
    path_sense: float
    oscillation_period_frames: float
    oscillation_phase_rad: float
    oscillation_axis_rad: float


@dataclass(frozen=True)
class Trajectory:
    """Per-frame object motion relative to mid-clip: ``displacement_xy`` ``[T, 2] float64`` pixels,
    ``rotation_rad`` ``[T]`` (growing = clockwise on screen), ``scale`` ``[T]`` (size factor)."""

    displacement_xy: np.ndarray
    rotation_rad: np.ndarray
    scale: np.ndarray


def video_rngs(seed: int, role: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (appearance, motion) generators of video ``index`` of ``role`` under global ``seed``."""
    if role not in _ROLE_CODES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if index < 0:
        raise ValueError(f"video index must be >= 0, got {index}")
    appearance, motion = np.random.SeedSequence([seed, _ROLE_CODES[role], index]).spawn(2)
    return np.random.default_rng(appearance), np.random.default_rng(motion)


def motion_trajectory(class_name: str, params: MotionParams, diameter_px: float, n_frames: int) -> Trajectory:
    """Object motion of ``class_name`` over ``n_frames``, zero displacement/rotation and unit scale at
    mid-clip (``t = (n_frames - 1) / 2``); image axes x right, y down."""
    centred_t = np.arange(n_frames, dtype=np.float64) - 0.5 * (n_frames - 1)
    zeros = np.zeros(n_frames)
    displacement = np.zeros((n_frames, 2))
    rotation = zeros
    scale = np.ones(n_frames)
    travel = params.speed_px_per_frame * centred_t
    if class_name == "TranslateLeft":
        displacement[:, 0] = -travel
    elif class_name == "TranslateRight":
        displacement[:, 0] = travel
    elif class_name == "TranslateUp":
        displacement[:, 1] = -travel
    elif class_name == "TranslateDown":
        displacement[:, 1] = travel
    elif class_name in ("RotateClockwise", "RotateCounterClockwise"):
        sense = 1.0 if class_name == "RotateClockwise" else -1.0
        rotation = sense * travel / (0.5 * diameter_px)
    elif class_name in ("ZoomIn", "ZoomOut"):
        sense = 1.0 if class_name == "ZoomIn" else -1.0
        scale = params.zoom_ratio ** (sense * centred_t / (n_frames - 1))
    elif class_name == "CircularPath":
        angle = params.path_start_rad + params.path_sense * travel / params.path_radius_px
        displacement[:, 0] = params.path_radius_px * (np.cos(angle) - np.cos(params.path_start_rad))
        displacement[:, 1] = params.path_radius_px * (np.sin(angle) - np.sin(params.path_start_rad))
    elif class_name == "Oscillate":
        period = params.oscillation_period_frames
        amplitude = params.speed_px_per_frame * period / 4.0
        phase = params.oscillation_phase_rad
        offset = amplitude * (np.sin(2.0 * np.pi * centred_t / period + phase) - np.sin(phase))
        axis = np.array([np.cos(params.oscillation_axis_rad), np.sin(params.oscillation_axis_rad)])
        displacement = offset[:, None] * axis[None, :]
    else:
        raise ValueError(f"class {class_name!r} is not one of {MOTION_CLASSES}")
    return Trajectory(displacement_xy=displacement, rotation_rad=rotation, scale=scale)


@dataclass(frozen=True)
class _Scene:
    """One video's content and where its object is: ``centres_xy`` ``[T, 2]`` pixels on screen."""

    appearance: _Appearance
    trajectory: Trajectory
    centres_xy: np.ndarray
    camera_shift_xy: np.ndarray


def _scene(spec: VideoSpec, config: SynthConfig) -> _Scene:
    appearance_rng, motion_rng = video_rngs(config.seed, spec.role, spec.index)
    appearance = _sample_appearance(appearance_rng, config, _sprite_canvas(config)[0])
    params = sample_motion(motion_rng, config)
    trajectory = motion_trajectory(spec.class_name, params, appearance.diameter_px, config.n_frames)
    centred_t = np.arange(config.n_frames, dtype=np.float64) - 0.5 * (config.n_frames - 1)
    camera_shift = appearance.pan_xy[None, :] * centred_t[:, None]
    centres = appearance.centre_xy[None, :] + trajectory.displacement_xy - camera_shift
    return _Scene(appearance, trajectory, centres, camera_shift)


def render_video(spec: VideoSpec, config: SynthConfig) -> np.ndarray:
    """Render one video: ``[n_frames, H, W, 3] uint8`` RGB, bit-identical for the same (spec, config).

    Appearance depends on (seed, role, index) only; ``spec.class_name`` only sets the motion.
    """
    return _render(_scene(spec, config), config)


def _render(scene: _Scene, config: SynthConfig) -> np.ndarray:
    appearance, trajectory = scene.appearance, scene.trajectory
    sprite = sprite_pyramid(
        appearance.sprite_alpha,
        appearance.sprite_pattern,
        appearance.object_colours,
        _sprite_canvas(config)[1],
    )
    frame_hw = config.frame_size_px
    background_offsets = appearance.background_pad_px + scene.camera_shift_xy
    frames = np.empty((config.n_frames, *frame_hw, 3), dtype=np.float32)
    for t in range(config.n_frames):
        background = crop_background(appearance.background, background_offsets[t], frame_hw)
        layer = warp_sprite(
            sprite,
            scene.centres_xy[t],
            appearance.diameter_px * trajectory.scale[t],
            appearance.angle_rad + trajectory.rotation_rad[t],
            frame_hw,
        )
        frames[t] = composite(background, layer)
    frames *= 255.0
    if appearance.noise is not None:
        frames += appearance.noise
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def object_boxes(spec: VideoSpec, config: SynthConfig) -> np.ndarray:
    """The object's box on every frame of the video: ``[n_frames, 4] float64`` (x1, y1, x2, y2) pixels,
    the square around the shape's circle (its diameter times its scale) plus half a pixel of edge blur,
    clipped to the frame: the actor's box, as a person detector gives it for the IDT release."""
    return _boxes(_scene(spec, config), config)


def _boxes(scene: _Scene, config: SynthConfig) -> np.ndarray:
    height, width = config.frame_size_px
    radius = 0.5 * scene.appearance.diameter_px * scene.trajectory.scale + 0.5
    low = scene.centres_xy - radius[:, None]
    high = scene.centres_xy + radius[:, None]
    limits = np.array([width - 1, height - 1], dtype=np.float64)
    return np.concatenate([np.clip(low, 0, limits), np.clip(high, 0, limits)], axis=1)


def boxes_text(boxes: np.ndarray) -> str:
    """``[T, 4]`` boxes, one per frame, in the IDT release's box format: a line per frame, its index then
    x1 y1 x2 y2 and a detection score (1)."""
    return "".join(
        f"{t} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} 1\n" for t, (x1, y1, x2, y2) in enumerate(boxes.tolist())
    )


def write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    """Encode ``frames`` (``[T, H, W, 3] uint8`` RGB, even H and W) to ``path`` with OpenCV's 'mp4v' codec.

    The file is decoded back and must yield T frames of H x W, else :class:`SynthError` is raised.
    """
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    n_frames, height, width = frames.shape[:3]
    if height % 2 or width % 2:
        raise ValueError(f"mp4v needs even frame sides, got {height}x{width}")
    writer = cv2.VideoWriter(
        str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*_MP4_FOURCC), fps, (width, height)
    )
    if not writer.isOpened():
        raise SynthError(f"cannot open an mp4v video writer for {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    decoded = _count_decoded_frames(path, (height, width))
    if decoded != n_frames:
        raise SynthError(f"{path} decodes to {decoded} frames of {height}x{width}, expected {n_frames}")


def plan_dataset(config: SynthConfig) -> list[VideoSpec]:
    """Every video of the data set: target test and train videos (class-major), then the source videos in
    a seeded shuffled order under class-blind names ``src_NNNNNN.mp4``."""
    specs: list[VideoSpec] = []
    role_counts = {"test": 0, "train": 0}
    for class_name in config.classes:
        group = 1
        for role, count in (("test", config.n_test_per_class), ("train", config.n_train_per_class)):
            for clip in range(count):
                group_index, clip_index = divmod(clip, config.clips_per_group)
                name = f"v_{class_name}_g{group + group_index:02d}_c{clip_index + 1:02d}.mp4"
                specs.append(VideoSpec(role, role_counts[role], class_name, f"{class_name}/{name}"))
                role_counts[role] += 1
            group += math.ceil(count / config.clips_per_group)
    order_rng = np.random.default_rng(np.random.SeedSequence([config.seed, _SOURCE_ORDER_CODE]))
    source_classes = order_rng.permutation(np.repeat(np.array(config.classes), config.n_source_per_class))
    specs += [
        VideoSpec("source", index, str(class_name), f"src_{index:06d}.mp4")
        for index, class_name in enumerate(source_classes)
    ]
    return specs


def generate_dataset(out_dir: Path, config: SynthConfig, n_workers: int = 1) -> SynthSummary:
    """Write the synthetic data set under ``out_dir`` (layout in the module docstring); resumable.

    Videos already present are kept; a folder made with a different config raises :class:`SynthError`.
    ``n_workers > 1`` renders in that many spawned processes (the calling script needs the usual
    ``if __name__ == "__main__":`` guard); the files are the same as with one worker.
    """
    layout = SynthLayout(Path(out_dir))
    _claim_folder(layout, config)
    specs = plan_dataset(config)
    pending = [spec for spec in specs if not layout.video_path(spec).exists()]
    logger.info("synthetic data set %s: %d videos, %d to render", layout.root, len(specs), len(pending))
    layout.partial.mkdir(parents=True, exist_ok=True)
    jobs = [(spec, config, layout) for spec in pending]
    if n_workers > 1 and len(pending) > 1:
        with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn")) as pool:
            for done, _ in enumerate(pool.map(_render_and_write, jobs, chunksize=8), start=1):
                _log_progress(done, len(jobs))
    else:
        for done, job in enumerate(jobs, start=1):
            _render_and_write(job)
            _log_progress(done, len(jobs))
    shutil.rmtree(layout.partial)
    for spec in specs:  # data sets written before the boxes were
        if not layout.boxes_path(spec).exists():
            _write_boxes(layout, spec, object_boxes(spec, config))
    _write_split_files(layout, config, specs)
    return SynthSummary(
        root=layout.root,
        class_names=list(config.classes),
        n_train=sum(spec.role == "train" for spec in specs),
        n_test=sum(spec.role == "test" for spec in specs),
        n_source=sum(spec.role == "source" for spec in specs),
        n_written=len(pending),
        n_skipped=len(specs) - len(pending),
    )


def _sprite_canvas(config: SynthConfig) -> tuple[int, int]:
    """Sprite canvas side (power of two, shape at most half of it) and pyramid depth for ``config``."""
    largest = config.object_size_px[1] * math.sqrt(config.zoom_ratio[1])
    smallest = config.object_size_px[0] / math.sqrt(config.zoom_ratio[1])
    canvas_px = max(16, 2 ** math.ceil(math.log2(2.0 * largest)))
    n_levels = max(1, math.floor(math.log2(SPRITE_FILL * canvas_px / smallest)) + 1)
    return canvas_px, n_levels


def _sample_appearance(rng: np.random.Generator, config: SynthConfig, canvas_px: int) -> _Appearance:
    """Draw everything a video looks like, in a fixed order that never depends on its class."""
    height, width = config.frame_size_px
    polygon = shape_polygon(SHAPES[rng.integers(len(SHAPES))], rng)
    pattern = texture_pattern(TEXTURES[rng.integers(len(TEXTURES))], canvas_px, rng)
    object_colours = rng.uniform(0.05, 0.95, size=(2, 3)).astype(np.float32)
    diameter_px = rng.uniform(*config.object_size_px)
    angle_rad = rng.uniform(0.0, 2.0 * np.pi)
    frame_centre = 0.5 * (np.array([width, height], dtype=np.float64) - 1.0)
    spread = config.centre_range_fraction * np.array([width, height], dtype=np.float64)
    centre_xy = frame_centre + (rng.random(2) - 0.5) * spread
    pan_speed = rng.uniform(0.0, config.camera_pan_px_per_frame)
    pan_angle = rng.uniform(0.0, 2.0 * np.pi)
    pan_xy = pan_speed * np.array([np.cos(pan_angle), np.sin(pan_angle)])
    pad_px = math.ceil(config.camera_pan_px_per_frame * 0.5 * (config.n_frames - 1)) + 2
    background_colours = rng.uniform(*config.background_colour_range, size=(2, 3)).astype(np.float32)
    background = background_texture(
        height + 2 * pad_px, width + 2 * pad_px, background_colours, config.background_contrast, rng
    )
    noise = None
    if config.noise_std > 0:
        noise = rng.standard_normal((config.n_frames, height, width, 3), dtype=np.float32) * config.noise_std
    return _Appearance(
        sprite_alpha=shape_alpha(polygon, canvas_px),
        sprite_pattern=pattern,
        object_colours=object_colours,
        diameter_px=diameter_px,
        angle_rad=angle_rad,
        centre_xy=centre_xy,
        background=background,
        background_pad_px=pad_px,
        pan_xy=pan_xy,
        noise=noise,
    )


def sample_motion(rng: np.random.Generator, config: SynthConfig) -> MotionParams:
    """Draw a video's motion parameters from ``config``'s ranges (same draws for every class)."""
    return MotionParams(
        speed_px_per_frame=rng.uniform(*config.speed_px_per_frame),
        zoom_ratio=rng.uniform(*config.zoom_ratio),
        path_radius_px=rng.uniform(*config.path_radius_px),
        path_start_rad=rng.uniform(0.0, 2.0 * np.pi),
        path_sense=float(rng.choice([-1.0, 1.0])),
        oscillation_period_frames=rng.uniform(*config.oscillation_period_frames),
        oscillation_phase_rad=rng.uniform(0.0, 2.0 * np.pi),
        oscillation_axis_rad=rng.uniform(0.0, np.pi),
    )


def _count_decoded_frames(path: Path, frame_hw: tuple[int, int]) -> int:
    """Frames of ``frame_hw`` that ``cv2.VideoCapture`` decodes from ``path``, up to the first other size."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame.shape[:2] != tuple(frame_hw):
                return count
            count += 1
    finally:
        capture.release()


def _render_and_write(job: tuple[VideoSpec, SynthConfig, SynthLayout]) -> None:
    """Render one video to the scratch folder and rename it into place once it decodes, its object's
    boxes first."""
    spec, config, layout = job
    scene = _scene(spec, config)
    _write_boxes(layout, spec, _boxes(scene, config))
    final = layout.video_path(spec)
    scratch = layout.partial / f"{spec.role}_{spec.index:06d}.mp4"
    write_mp4(_render(scene, config), scratch, config.fps)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, final)


def _write_boxes(layout: SynthLayout, spec: VideoSpec, boxes: np.ndarray) -> None:
    fs.write_bytes_atomic(str(layout.boxes_path(spec)), boxes_text(boxes).encode())


def _claim_folder(layout: SynthLayout, config: SynthConfig) -> None:
    """Record ``config`` in the folder, or check that the folder was made with the same config."""
    if layout.config_json.exists():
        existing = SynthConfig.model_validate_json(layout.config_json.read_text())
        if existing != config:
            raise SynthError(
                f"{layout.root} holds a synthetic data set made with a different config "
                f"({layout.config_json}); use another folder or the same config"
            )
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    fs.write_bytes_atomic(str(layout.config_json), config.model_dump_json(indent=2).encode())


def discard_other_dataset(out_dir: Path, config: SynthConfig) -> bool:
    """Delete the synthetic data set under ``out_dir`` when it was made with a config other than ``config``
    (its ``synth_config.json`` says so; a folder without one is never touched). Returns whether it did."""
    layout = SynthLayout(Path(out_dir))
    if not layout.config_json.exists():
        return False
    if SynthConfig.model_validate_json(layout.config_json.read_text()) == config:
        return False
    shutil.rmtree(layout.root)
    return True


def _write_split_files(layout: SynthLayout, config: SynthConfig, specs: list[VideoSpec]) -> None:
    """classInd.txt, trainlist01.txt, testlist01.txt and the source's held-out label CSV."""
    label_numbers = {name: number for number, name in enumerate(config.classes, start=1)}
    class_index = "".join(f"{number} {name}\n" for name, number in label_numbers.items())
    train = "".join(f"{s.relative_path} {label_numbers[s.class_name]}\n" for s in specs if s.role == "train")
    test = "".join(f"{s.relative_path}\n" for s in specs if s.role == "test")
    for name, text in (("classInd.txt", class_index), ("trainlist01.txt", train), ("testlist01.txt", test)):
        fs.write_bytes_atomic(str(layout.target_splits / name), text.encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    source_dir = layout.source_videos.relative_to(layout.source_heldout_labels.parent)
    writer.writerows(
        [(f"{source_dir.as_posix()}/{s.relative_path}", s.class_name) for s in specs if s.role == "source"]
    )
    fs.write_bytes_atomic(str(layout.source_heldout_labels), buffer.getvalue().encode())


def _log_progress(done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
        logger.info("rendered %d/%d synthetic videos", done, total)
