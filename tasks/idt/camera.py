"""Camera motion estimation of Improved Dense Trajectories (Wang & Schmid, ICCV 2013).

Between consecutive frames, a homography is fitted by RANSAC (1 px threshold) to two sets of matches:
keypoint descriptors matched within a 25 px window (SURF in the paper; SIFT or ORB here, since SURF is not in
the PyPI OpenCV builds; the reference build used SIFT) and up to 1000 good-features-to-track corners of the
first frame moved by the tracking flow. It is used only with more than 50 matches and more than 25 inliers,
otherwise the identity. Optional human boxes remove their pixels from both match sets. The second frame is
warped onto the first (pixels that land within 5 px of the border keep the first frame's value) and the flow
recomputed on it; in pipeline mode the precomputed flow is compensated analytically instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Keypoints:
    """Keypoint positions ``[k, 2] float32`` (x, y) and their descriptors ``[k, D]`` (None when k is 0)."""

    points: np.ndarray
    descriptors: np.ndarray | None


@dataclass(frozen=True)
class CameraMotionParams:
    """Parameters of the homography estimate (the reference release's values as defaults in IdtConfig)."""

    detector: str
    match_window_px: float
    max_corners: int
    corner_quality: float
    corner_min_distance_px: float
    ransac_threshold_px: float
    min_matches: int
    min_inliers: int


class CameraMotionEstimator:
    """Keypoints per frame and the homography between consecutive frames."""

    def __init__(self, params: CameraMotionParams) -> None:
        self.params = params
        if params.detector == "sift":
            self.detector = cv2.SIFT_create()
        elif params.detector == "orb":
            self.detector = cv2.ORB_create()
        else:
            raise ValueError(f"unknown keypoint detector {params.detector!r}; expected 'sift' or 'orb'")

    def keypoints(self, grey: np.ndarray, mask: np.ndarray | None) -> Keypoints:
        """Keypoints of ``grey`` ``[h, w] uint8`` outside the zeros of ``mask`` ``[h, w] uint8``. OpenCV's
        SIFT descriptors are whole numbers in 0..255 stored as float32; they are kept as uint8 (exactly the
        same values, a quarter of the memory to gather when matching)."""
        found, descriptors = self.detector.detectAndCompute(grey, mask)
        if not found:
            return Keypoints(np.empty((0, 2), np.float32), None)
        points = cv2.KeyPoint.convert(found).reshape(-1, 2)
        if descriptors.dtype == np.float32:
            as_bytes = descriptors.astype(np.uint8)
            if np.array_equal(as_bytes, descriptors):
                descriptors = as_bytes
        return Keypoints(points, descriptors)

    def keypoint_matches(self, previous: Keypoints, current: Keypoints) -> tuple[np.ndarray, np.ndarray]:
        """For each current keypoint, the nearest previous descriptor among keypoints less than
        ``match_window_px`` away in x and in y (the reference's windowed brute-force match; ties go to the
        lower index). Returns matched positions ``[m, 2]`` (previous, current)."""
        if previous.descriptors is None or current.descriptors is None:
            return np.empty((0, 2), np.float32), np.empty((0, 2), np.float32)
        query, train = _window_pairs(current.points, previous.points, self.params.match_window_px)
        if len(query) == 0:
            return np.empty((0, 2), np.float32), np.empty((0, 2), np.float32)
        distance = self._distances(current.descriptors[query], previous.descriptors[train])
        # Pairs come grouped by query: per group, the smallest distance, then the lowest train index.
        group_start = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
        group_size = np.diff(np.r_[group_start, len(query)])
        nearest = np.repeat(np.minimum.reduceat(distance, group_start), group_size)
        candidate = np.where(distance == nearest, train, len(previous.points))
        best = np.minimum.reduceat(candidate, group_start)
        return previous.points[best], current.points[query[group_start]]

    def _distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise distances ``[m]`` of descriptors ``[m, D]``: Hamming for ORB's binary descriptors,
        otherwise squared L2 (ordered as L2), exact for the whole-number SIFT values."""
        if self.params.detector == "orb":
            return _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=1, dtype=np.int32)
        if a.dtype == np.uint8:
            difference = a.astype(np.int16)
            difference -= b
            difference = difference.astype(np.float32)
        else:
            difference = a - b
        return np.einsum("ij,ij->i", difference, difference)

    def flow_matches(
        self, prev_grey: np.ndarray, flow: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Good-features-to-track corners of ``prev_grey`` and their rounded positions moved by ``flow``
        ``[2, h, w]``: matched positions ``[m, 2]`` (previous, current)."""
        height, width = prev_grey.shape
        corners = cv2.goodFeaturesToTrack(
            prev_grey,
            self.params.max_corners,
            self.params.corner_quality,
            self.params.corner_min_distance_px,
            mask=mask,
        )
        if corners is None:
            return np.empty((0, 2), np.float32), np.empty((0, 2), np.float32)
        corners = corners.reshape(-1, 2)
        x = np.clip(np.rint(corners[:, 0]).astype(np.intp), 0, width - 1)
        y = np.clip(np.rint(corners[:, 1]).astype(np.intp), 0, height - 1)
        moved = np.stack([x, y], axis=1).astype(np.float32) + flow[:, y, x].T
        return corners, moved

    def homography(
        self,
        previous: Keypoints,
        current: Keypoints,
        prev_grey: np.ndarray,
        flow: np.ndarray,
        mask: np.ndarray | None,
    ) -> np.ndarray:
        """Homography ``[3, 3] float64`` mapping the previous frame onto the current one; identity when
        the matches or the RANSAC inliers are too few."""
        flow_prev, flow_next = self.flow_matches(prev_grey, flow, mask)
        key_prev, key_next = self.keypoint_matches(previous, current)
        source = np.concatenate([flow_prev, key_prev])
        target = np.concatenate([flow_next, key_next])
        if len(source) > self.params.min_matches:
            estimate, inliers = cv2.findHomography(
                source, target, cv2.RANSAC, self.params.ransac_threshold_px
            )
            if estimate is not None and int(np.count_nonzero(inliers)) > self.params.min_inliers:
                return estimate
        return np.eye(3)


_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint8)
"""Number of set bits of each byte value (Hamming distances of binary descriptors)."""


def _window_pairs(query: np.ndarray, train: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """All (query, train) index pairs ``[m] intp`` of points ``[k, 2]`` and ``[p, 2]`` less than ``window``
    apart in x and in y, grouped by query index (ascending); found through the train points sorted by x."""
    by_x = np.argsort(train[:, 0], kind="stable")
    sorted_x = train[by_x, 0]
    start = np.searchsorted(sorted_x, query[:, 0] - window, side="right")
    stop = np.searchsorted(sorted_x, query[:, 0] + window, side="left")
    counts = np.maximum(stop - start, 0)
    query_index = np.repeat(np.arange(len(query)), counts)
    position = np.arange(counts.sum()) + np.repeat(start - (np.cumsum(counts) - counts), counts)
    train_index = by_x[position]
    keep = np.abs(train[train_index, 1] - query[query_index, 1]) < window
    return query_index[keep], train_index[keep]


def box_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[h, w] uint8`` mask: 0 inside any box ``[b, 4]`` (x1, y1, x2, y2; pixels from ceil(x1) to
    floor(x2) inclusive, as the reference's ``InitMaskWithBox``), 1 elsewhere."""
    columns = np.arange(width)[None, None, :]
    rows = np.arange(height)[None, :, None]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    inside = (
        (columns >= np.ceil(x1)) & (columns <= np.floor(x2)) & (rows >= np.ceil(y1)) & (rows <= np.floor(y2))
    )
    return (~inside.any(axis=0)).astype(np.uint8)


def _project(homography: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of an ``[h, w]`` grid lands under ``homography``: x and y ``[h, w] float64``."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    h = homography
    scale = h[2, 0] * xs + h[2, 1] * ys + h[2, 2]
    scale = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    return (h[0, 0] * xs + h[0, 1] * ys + h[0, 2]) * scale, (h[1, 0] * xs + h[1, 1] * ys + h[1, 2]) * scale


def warp_frame(prev_grey: np.ndarray, grey: np.ndarray, homography: np.ndarray, margin_px: int) -> np.ndarray:
    """The current frame ``grey`` ``[h, w] uint8`` resampled onto the previous one: pixel p takes the
    value at ``homography @ p`` (bilinear); pixels whose source lies within ``margin_px`` of the border keep
    ``prev_grey``'s value (the reference's ``MyWarpPerspective``)."""
    height, width = grey.shape
    warped = cv2.warpPerspective(
        grey, homography, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    x, y = _project(homography, height, width)
    outside = ~(
        (x > margin_px) & (x < width - 1 - margin_px) & (y > margin_px) & (y < height - 1 - margin_px)
    )
    warped[outside] = prev_grey[outside]
    return warped


def compensate_flow(flow: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Flow ``[2, h, w] float32`` between the previous frame and the current frame warped by
    ``homography`` (as :func:`warp_frame`): ``H^-1 (p + flow(p)) - p``."""
    _, height, width = flow.shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    inverse = np.linalg.inv(homography)
    tx, ty = xs + flow[0], ys + flow[1]
    scale = inverse[2, 0] * tx + inverse[2, 1] * ty + inverse[2, 2]
    scale = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    out = np.empty_like(flow)
    out[0] = (inverse[0, 0] * tx + inverse[0, 1] * ty + inverse[0, 2]) * scale - xs
    out[1] = (inverse[1, 0] * tx + inverse[1, 1] * ty + inverse[1, 2]) * scale - ys
    return out
