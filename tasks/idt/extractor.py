"""Improved Dense Trajectories (Wang & Schmid, ICCV 2013), faithful to the authors' 2013 release.

Per frame: points sampled densely (every 5 px, 8 scales at most, factor sqrt(2)) are tracked for 15 frames
by median-filtered dense flow, at each scale with that scale's flow. A RANSAC homography (keypoint and flow
matches) estimates the camera motion; the second frame is warped by it and the flow recomputed, and that
compensated flow feeds HOF, MBH and the trajectory shape, and removes tracks that only follow the camera.
Each finished track gives one 436-column row (with the default parameters):

- 0..9: frame of the track's last point, mean x, mean y, std x, std y (the reference's "var" fields), length,
  scale, x_pos, y_pos, t_pos (mean position and middle frame normalised by width, height and frame count);
- 10..39 trajectory shape, 40..135 HOG, 136..243 HOF, 244..339 MBHx, 340..435 MBHy.

Two flow sources: ``reference`` computes the release's Farnebäck flow per pyramid level (twice per frame:
on the frame and on the warped frame); ``pipeline`` takes precomputed full-resolution flow (e.g. the stored
TV-L1), resizes it to every scale and compensates it with the homography analytically.

Choices where the release's behaviour is easy to misread, kept as the release has them:

- Median filtering: each flow level is median-filtered (5x5) as a whole and a point moves by the flow at its
  rounded position (the 3x3 median at the point belongs to the earlier Dense Trajectories release).
- Camera-motion test: ``IsCameraMotion`` drops a track when its *largest* compensated displacement (at full
  resolution) is at most 1 px, not its mean.
- The trajectory shape is the compensated flow at the tracked points, divided by the sum of its magnitudes;
  mean, std and length describe the uncompensated track.
- Human boxes: the release indexes its box file by line (one line per frame); here each line's frame index
  decides, and frames without a line have no boxes.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from motionfit.tasks.idt.camera import (
    CameraMotionEstimator,
    CameraMotionParams,
    Keypoints,
    box_mask,
    compensate_flow,
    warp_frame,
)
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.descriptors import (
    FrameDescriber,
    TrajectoryTests,
    pool_descriptors,
    trajectory_features,
)
from motionfit.tasks.idt.pyramid_flow import (
    FarnebackPyramid,
    image_pyramid,
    resize_flow_pyramid,
    scale_pyramid,
)
from motionfit.tasks.idt.tracking import FinishedTracks, TrackSet, dense_sample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdtResult:
    """``trajectories`` ``[N, 436] float32`` (rows ordered by end frame, then scale, then creation) and
    ``counts_per_frame`` ``[T] int32``: how many trajectories end on each frame."""

    trajectories: np.ndarray
    counts_per_frame: np.ndarray


class VideoInputError(ValueError):
    """Raised when a video, its frames, flows or boxes are not what the extractor expects."""


class TrajectoryExtractor:
    """Streaming extractor: feed grey frames one by one with :meth:`push`, then call :meth:`result`; or take
    the rows finished so far with :meth:`take_rows` as it goes, so that a long video's rows need not wait in
    memory. Its state is the live tracks (``track_length`` frames each) and the previous frame."""

    def __init__(self, config: IdtConfig, height: int, width: int) -> None:
        self.config = config
        self.height, self.width = height, width
        if min(height, width) < config.patch_size:
            raise VideoInputError(
                f"frames of {width}x{height} px are smaller than the {config.patch_size} px descriptor patch"
            )
        self.pyramid = scale_pyramid(width, height, config.max_scales, config.scale_stride, config.patch_size)
        self.layout = config.layout()
        self.columns = config.columns()
        self.tests = TrajectoryTests(
            min_var=config.min_var,
            max_var=config.max_var,
            max_dis=config.max_dis,
            max_dis_ratio=config.max_dis_ratio,
            min_camera_displacement=config.min_camera_displacement,
        )
        self.farneback = FarnebackPyramid(
            self.pyramid,
            config.poly_n,
            config.poly_sigma,
            config.winsize,
            config.iterations,
            config.median_ksize,
            config.scale_stride,
        )
        self.camera = (
            CameraMotionEstimator(
                CameraMotionParams(
                    detector=config.keypoint_detector,
                    match_window_px=config.match_window_px,
                    max_corners=config.max_corners,
                    corner_quality=config.corner_quality,
                    corner_min_distance_px=config.corner_min_distance_px,
                    ransac_threshold_px=config.ransac_threshold_px,
                    min_matches=config.min_matches,
                    min_inliers=config.min_inliers,
                )
            )
            if config.camera_motion
            else None
        )
        self.describers = [
            FrameDescriber(self.layout, h, w, config.epsilon, config.min_flow) for w, h in self.pyramid.sizes
        ]
        self.tracks = [
            TrackSet(config.track_length, config.nt_cell, self.layout.frames_per_cell, self.layout.frame_dim)
            for _ in range(self.pyramid.n_scales)
        ]
        self.frame_index = -1
        self.frames_since_sampling = 0
        self.rows: list[np.ndarray] = []  # finished since the last take_rows
        self.counts: list[int] = []  # trajectories ending on each frame pushed
        self.prev_grey: np.ndarray | None = None
        self.prev_levels: list[np.ndarray] = []
        self.prev_expansions: list[np.ndarray] = []
        self.prev_keypoints: Keypoints | None = None

    def push(self, grey: np.ndarray, flow: np.ndarray | None = None, boxes: np.ndarray | None = None) -> None:
        """Process the next frame ``grey`` ``[H, W] uint8``. ``flow`` ``[2, H, W] float32``: precomputed flow
        from the previous frame to this one (pipeline mode). ``boxes`` ``[b, 4]``: human boxes (x1, y1, x2,
        y2) of this frame, excluded from the camera-motion estimate."""
        self.frame_index += 1
        self.counts.append(0)
        mask = box_mask(boxes, self.height, self.width) if boxes is not None and len(boxes) else None
        levels = image_pyramid(grey, self.pyramid)
        keypoints = self.camera.keypoints(grey, mask) if self.camera is not None else None
        expansions = self.farneback.expand(grey) if self.config.mode == "reference" else []
        if self.prev_grey is None:
            for track_set, level in zip(self.tracks, levels, strict=True):
                track_set.add(
                    dense_sample(
                        level, np.empty((0, 2), np.float32), self.config.min_distance, self.config.quality
                    )
                )
        else:
            self._track(grey, levels, expansions, keypoints, flow, mask)
        self.prev_grey, self.prev_levels = grey, levels
        self.prev_expansions, self.prev_keypoints = expansions, keypoints

    def _flows(
        self,
        grey: np.ndarray,
        expansions: list[np.ndarray],
        keypoints: Keypoints | None,
        flow: np.ndarray | None,
        mask: np.ndarray | None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Tracking and compensated flow per scale, each ``[2, h, w] float32``."""
        if self.config.mode == "reference":
            tracking = self.farneback.flow(self.prev_expansions, expansions)
        else:
            tracking = resize_flow_pyramid(flow, self.pyramid, self.config.median_ksize)
        if self.camera is None:
            return tracking, tracking
        homography = self.camera.homography(self.prev_keypoints, keypoints, self.prev_grey, tracking[0], mask)
        if self.config.mode == "reference":
            warped = warp_frame(self.prev_grey, grey, homography, self.config.warp_margin_px)
            compensated = self.farneback.flow(self.prev_expansions, self.farneback.expand(warped))
        else:
            compensated = resize_flow_pyramid(
                compensate_flow(flow, homography), self.pyramid, self.config.median_ksize
            )
        return tracking, compensated

    def _track(
        self,
        grey: np.ndarray,
        levels: list[np.ndarray],
        expansions: list[np.ndarray],
        keypoints: Keypoints | None,
        flow: np.ndarray | None,
        mask: np.ndarray | None,
    ) -> None:
        tracking, compensated = self._flows(grey, expansions, keypoints, flow, mask)
        self.frames_since_sampling += 1
        sample = self.frames_since_sampling == self.config.init_gap
        for scale_index, track_set in enumerate(self.tracks):
            describer = self.describers[scale_index]
            integral = describer.integral_histograms(self.prev_levels[scale_index], compensated[scale_index])

            describe = functools.partial(describer.describe, integral)
            finished = track_set.advance(tracking[scale_index], compensated[scale_index], describe)
            if len(finished.points):
                rows = self._rows(finished, float(self.pyramid.scales[scale_index]))
                self.rows.append(rows)
                self.counts[-1] += len(rows)
            if sample:
                track_set.add(
                    dense_sample(
                        levels[scale_index],
                        track_set.positions(),
                        self.config.min_distance,
                        self.config.quality,
                    )
                )
        if sample:
            self.frames_since_sampling = 0

    def _rows(self, finished: FinishedTracks, scale: float) -> np.ndarray:
        """Output rows ``[m', row_dim] float32`` of the finished tracks that pass the reference's tests."""
        points = finished.points * np.float32(scale)
        displacements = finished.displacements * np.float32(scale)
        keep, fields, shape = trajectory_features(points, displacements, self.tests)
        m = int(keep.sum())
        rows = np.empty((m, self.columns.row_dim), dtype=np.float32)
        rows[:, 0] = self.frame_index
        rows[:, 1:6] = fields[keep]
        rows[:, 6] = scale
        rows[:, 7] = np.clip(fields[keep, 0] / self.width, 0, 0.999)
        rows[:, 8] = np.clip(fields[keep, 1] / self.height, 0, 0.999)
        rows[:, 9] = 0.0  # t_pos needs the frame count, filled in by take_rows()
        shape_start, shape_end = self.columns.ranges()["trajectory"]
        rows[:, shape_start:shape_end] = shape[keep]
        rows[:, shape_end:] = pool_descriptors(finished.descriptor_sums[keep], self.layout)
        return rows

    def take_rows(self, n_frames: int) -> np.ndarray:
        """The trajectories finished since the last call, ``[m, row_dim] float32`` in output order, with t_pos
        for a video of ``n_frames`` frames."""
        rows = np.concatenate(self.rows) if self.rows else np.empty((0, self.columns.row_dim), np.float32)
        self.rows = []
        rows[:, 9] = np.clip((rows[:, 0] - self.config.track_length / 2.0) / n_frames, 0, 0.999)
        return rows

    def result(self) -> IdtResult:
        """The trajectories not taken yet (all, unless :meth:`take_rows` was called); t_pos uses the number
        of frames pushed."""
        counts = np.asarray(self.counts, dtype=np.int32)
        return IdtResult(trajectories=self.take_rows(len(counts)), counts_per_frame=counts)


def grey_frames(frames: np.ndarray) -> np.ndarray:
    """``[T, H, W] uint8`` grey or ``[T, H, W, 3] uint8`` RGB frames → ``[T, H, W] uint8`` grey."""
    if frames.dtype != np.uint8 or not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[3] == 3)):
        raise VideoInputError(
            f"frames has shape {frames.shape}, dtype {frames.dtype}; expected [T, H, W] or [T, H, W, 3] uint8"
        )
    if frames.ndim == 3:
        return np.ascontiguousarray(frames)
    return np.stack([cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in frames])


def channels_first(flow: np.ndarray) -> np.ndarray:
    """One frame's flow ``[H, W, 2]`` as :meth:`TrajectoryExtractor.push` takes it, ``[2, H, W] float32``."""
    return np.ascontiguousarray(np.moveaxis(flow, -1, 0), dtype=np.float32)


def boxes_per_frame(boxes: np.ndarray | None, n_frames: int) -> list[np.ndarray | None]:
    """``[M, >=5]`` rows (frame, x1, y1, x2, y2, ...) → per frame ``[b, 4] float32`` or None."""
    if boxes is None:
        return [None] * n_frames
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 5:
        raise VideoInputError(
            f"boxes has shape {boxes.shape}; expected [M, 6] rows (frame, x1, y1, x2, y2, score)"
        )
    frame = boxes[:, 0].astype(np.intp)
    if len(frame) and (frame.min() < 0 or frame.max() >= n_frames):
        raise VideoInputError(
            f"boxes name frames {frame.min()}..{frame.max()}; the video has {n_frames} frames"
        )
    order = np.argsort(frame, kind="stable")
    starts = np.searchsorted(frame[order], np.arange(n_frames + 1))
    coords = boxes[order, 1:5].astype(np.float32)
    return [coords[starts[t] : starts[t + 1]] if starts[t + 1] > starts[t] else None for t in range(n_frames)]


def extract_trajectories(
    frames: np.ndarray,
    config: IdtConfig,
    flows: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> IdtResult:
    """Improved Dense Trajectories of one video.

    ``frames`` ``[T, H, W] uint8`` grey or ``[T, H, W, 3] uint8`` RGB; ``flows`` ``[T-1, H, W, 2] float32``
    precomputed flow between consecutive frames, required in pipeline mode and refused in reference mode;
    ``boxes`` ``[M, 6]`` human boxes (frame, x1, y1, x2, y2, score), as returned by :func:`read_boxes`.
    """
    grey = grey_frames(frames)
    if len(grey) < 2:
        raise VideoInputError(f"frames holds {len(grey)} frame(s); trajectories need at least 2")
    n_frames, height, width = grey.shape
    if config.mode == "pipeline":
        expected = (n_frames - 1, height, width, 2)
        if flows is None or flows.shape != expected:
            got = "none" if flows is None else f"shape {flows.shape}"
            raise VideoInputError(f"pipeline mode needs flows of shape {expected}; got {got}")
    elif flows is not None:
        raise VideoInputError("reference mode computes its own flow; pass flows only with mode='pipeline'")
    per_frame_boxes = boxes_per_frame(boxes, n_frames)
    extractor = TrajectoryExtractor(config, height, width)
    for t in range(n_frames):
        flow = channels_first(flows[t - 1]) if flows is not None and t > 0 else None
        extractor.push(grey[t], flow, per_frame_boxes[t])
    return extractor.result()


def read_boxes(path: Path, n_frames: int) -> np.ndarray:
    """Human boxes in the reference's text format → ``[M, 6] float32`` rows (frame, x1, y1, x2, y2, score).

    One line per frame: the frame index, then five numbers per box (x1 y1 x2 y2 score). Lines without boxes
    and blank lines are allowed; frame indices must lie in ``[0, n_frames)``.
    """
    rows = []
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                frame = int(fields[0])
                values = [float(v) for v in fields[1:]]
            except ValueError as error:
                raise VideoInputError(
                    f"{path}:{line_number}: expected numbers, got {line.strip()!r}"
                ) from error
            if len(values) % 5:
                raise VideoInputError(
                    f"{path}:{line_number}: expected a frame index then 5 numbers per box, got {len(values)}"
                )
            if not 0 <= frame < n_frames:
                raise VideoInputError(
                    f"{path}:{line_number}: frame {frame} outside the video's {n_frames} frames"
                )
            rows.extend([frame, *values[i : i + 5]] for i in range(0, len(values), 5))
    return np.array(rows, dtype=np.float32).reshape(-1, 6)


def _count_frames(capture: cv2.VideoCapture) -> int:
    count = 0
    while capture.grab():
        count += 1
    return count


def extract_video_trajectories(
    path: str | Path, config: IdtConfig, boxes_path: Path | None = None
) -> IdtResult:
    """Improved Dense Trajectories of a video file, decoded frame by frame with ``cv2.VideoCapture``
    (memory stays bounded by the live tracks). ``boxes_path``: human boxes in the reference's format."""
    path = Path(path)
    if config.mode != "reference":
        raise VideoInputError(
            f"{path}: a video file has no precomputed flow; use mode='reference' or extract_trajectories"
        )
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoInputError(f"video file {path} cannot be opened by OpenCV's decoder")
    try:
        per_frame_boxes: list[np.ndarray | None] | None = None
        if boxes_path is not None:
            n_frames = _count_frames(capture)
            per_frame_boxes = boxes_per_frame(read_boxes(boxes_path, n_frames), n_frames)
            capture.release()
            capture = cv2.VideoCapture(str(path))
        extractor: TrajectoryExtractor | None = None
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
            if extractor is None:
                extractor = TrajectoryExtractor(config, *grey.shape)
            index = extractor.frame_index + 1
            boxes = (
                per_frame_boxes[index]
                if per_frame_boxes is not None and index < len(per_frame_boxes)
                else None
            )
            extractor.push(grey, None, boxes)
    finally:
        capture.release()
    if extractor is None or extractor.frame_index < 1:
        n = 0 if extractor is None else extractor.frame_index + 1
        raise VideoInputError(f"video file {path} yields {n} frame(s); trajectories need at least 2")
    result = extractor.result()
    logger.info(
        "%s: %d frames, %d trajectories", path, len(result.counts_per_frame), len(result.trajectories)
    )
    return result
