"""Dense sampling and flow tracking of Improved Dense Trajectories (Wang & Schmid, ICCV 2013).

Points are sampled on a regular grid (every ``min_distance`` px, at the cell centre) where the smaller
eigenvalue of the structure tensor exceeds ``quality`` times its maximum over the frame, only in grid cells
that no live track occupies. Each point moves by the (median-filtered) flow at its rounded position; a track
leaving the frame ends. Tracks of one scale live in preallocated slots, so that a frame updates all of them
with a few array operations and ending a track copies nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


def dense_sample(
    grey: np.ndarray, occupied_points: np.ndarray, min_distance: int, quality: float
) -> np.ndarray:
    """New points ``[k, 2] float32`` (x, y) of ``grey`` ``[h, w] uint8`` in grid cells free of
    ``occupied_points`` ``[n, 2] float32``, in row-major cell order (the reference's ``DenseSample``)."""
    height, width = grey.shape
    cols, rows = width // min_distance, height // min_distance
    if cols == 0 or rows == 0:
        return np.empty((0, 2), dtype=np.float32)
    eigen = cv2.cornerMinEigenVal(grey, 3, 3)
    threshold = float(eigen.max()) * quality
    free = np.ones((rows, cols), dtype=bool)
    cell = np.floor(occupied_points).astype(np.intp)
    inside = (cell[:, 0] < cols * min_distance) & (cell[:, 1] < rows * min_distance)
    free[cell[inside, 1] // min_distance, cell[inside, 0] // min_distance] = False
    offset = min_distance // 2
    centre_eigen = eigen[offset : offset + rows * min_distance : min_distance][
        :, offset : offset + cols * min_distance : min_distance
    ]
    row, col = np.nonzero(free & (centre_eigen > threshold))
    return np.stack([col * min_distance + offset, row * min_distance + offset], axis=1).astype(np.float32)


@dataclass
class FinishedTracks:
    """Tracks that reached full length at one scale: ``points`` ``[m, L + 1, 2]``, ``displacements``
    ``[m, L, 2]`` (compensated flow per step) and ``descriptor_sums`` ``[m, nt_cell, frame_dim]``, all float32
    in pixels of that scale, in the order the tracks were created."""

    points: np.ndarray
    displacements: np.ndarray
    descriptor_sums: np.ndarray


class TrackSet:
    """The live tracks of one scale, stored in slots: positions, compensated displacements and the per
    temporal cell sums of their frame descriptors."""

    def __init__(self, track_length: int, nt_cell: int, frames_per_cell: int, frame_dim: int) -> None:
        self.track_length = track_length
        self.nt_cell = nt_cell
        self.frames_per_cell = frames_per_cell
        self.points = np.empty((0, track_length + 1, 2), dtype=np.float32)
        self.displacements = np.empty((0, track_length, 2), dtype=np.float32)
        self.descriptor_sums = np.empty((0, nt_cell, frame_dim), dtype=np.float32)
        self.age = np.empty(0, dtype=np.intp)
        self.live = np.empty(0, dtype=np.intp)  # slots of live tracks, oldest first
        self.free = np.empty(0, dtype=np.intp)

    def __len__(self) -> int:
        return len(self.live)

    def positions(self) -> np.ndarray:
        """Current positions ``[n, 2] float32`` of the live tracks."""
        return self.points[self.live, self.age[self.live]]

    def add(self, points: np.ndarray) -> None:
        """Start a track at each of ``points`` ``[k, 2] float32``."""
        if len(points) > len(self.free):
            self._grow(len(points) - len(self.free))
        slots, self.free = self.free[: len(points)], self.free[len(points) :]
        self.points[slots, 0] = points
        self.age[slots] = 0
        self.descriptor_sums[slots] = 0.0
        self.live = np.concatenate([self.live, slots])

    def _grow(self, missing: int) -> None:
        capacity = len(self.age)
        extra = max(missing, capacity, 256)
        self.points = np.concatenate([self.points, np.empty((extra, *self.points.shape[1:]), np.float32)])
        self.displacements = np.concatenate(
            [self.displacements, np.empty((extra, *self.displacements.shape[1:]), np.float32)]
        )
        self.descriptor_sums = np.concatenate(
            [self.descriptor_sums, np.empty((extra, *self.descriptor_sums.shape[1:]), np.float32)]
        )
        self.age = np.concatenate([self.age, np.zeros(extra, dtype=np.intp)])
        self.free = np.concatenate([self.free, np.arange(capacity, capacity + extra, dtype=np.intp)])

    def advance(
        self,
        flow: np.ndarray,
        compensated_flow: np.ndarray,
        describe: Callable[[np.ndarray], np.ndarray],
    ) -> FinishedTracks:
        """Move every live track by ``flow`` ``[2, h, w]`` at its rounded position; record the compensated
        flow there and the frame descriptors ``describe(positions [n, 2]) -> [n, frame_dim]`` of the patch
        around the position before the move. Tracks leaving the frame are dropped; tracks reaching
        ``track_length`` steps are removed and returned."""
        _, height, width = flow.shape
        live = self.live
        age = self.age[live]
        current = self.points[live, age]
        x = np.clip(np.rint(current[:, 0]).astype(np.intp), 0, width - 1)
        y = np.clip(np.rint(current[:, 1]).astype(np.intp), 0, height - 1)
        moved = current + flow[:, y, x].T
        keep = (moved[:, 0] > 0) & (moved[:, 0] < width) & (moved[:, 1] > 0) & (moved[:, 1] < height)
        inside = np.flatnonzero(keep)
        slots, age, current, moved, x, y = (
            live[inside],
            age[inside],
            current[inside],
            moved[inside],
            x[inside],
            y[inside],
        )
        self.displacements[slots, age] = compensated_flow[:, y, x].T
        cell = age // self.frames_per_cell
        counted = np.flatnonzero(cell < self.nt_cell)
        # Row-major order of the positions: the descriptor gathers then sweep each histogram plane in order.
        counted = counted[np.argsort(y[counted] * width + x[counted], kind="stable")]
        self.descriptor_sums[slots[counted], cell[counted]] += describe(current[counted])
        self.points[slots, age + 1] = moved
        self.age[slots] = age + 1
        done = np.flatnonzero(age + 1 >= self.track_length)
        finished_slots = slots[done]
        finished = FinishedTracks(
            points=self.points[finished_slots],
            displacements=self.displacements[finished_slots],
            descriptor_sums=self.descriptor_sums[finished_slots],
        )
        keep[inside[done]] = False
        self.free = np.concatenate([self.free, live[~keep]])
        self.live = live[keep]
        return finished
