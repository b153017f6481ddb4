"""Descriptors of Improved Dense Trajectories (Wang & Schmid, ICCV 2013): HOG, HOF, MBHx, MBHy and shape.

Per frame and scale, every descriptor type is an integral histogram of orientations over 360 degrees: each
pixel's magnitude is split linearly between the two nearest of 8 orientation bins (HOF adds a 9th bin that
counts pixels whose flow is at most ``min_flow`` px, with weight 1). HOG reads the image gradient ([-1, 0, 1]
filters), HOF the camera-compensated flow, MBHx/MBHy the gradients of its x and y components. A trajectory's
32x32 patch, centred on its rounded position and clamped into the frame, is split into 2x2 spatial cells; each
cell histogram gets ``epsilon`` per bin, the cells of one type are L1-normalised together and square-rooted
(RootSIFT-style), and the 15 per-frame vectors are averaged over 3 temporal cells of 5 frames.

The bins of each type are stacked as planes of one image so that one ``cv2.integral`` gives its whole
integral histogram; the binning is two scatters per type (the wrap-around from the last bin to the first
goes through an extra plane, added to the first), and the cell corners of all tracks and types are read
with one gather per frame and scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from motionfit.tasks.idt.columns import DescriptorLayout


class FrameDescriber:
    """HOG, HOF, MBHx and MBHy of tracks at one scale (``[h, w]`` frames), frame pair by frame pair.

    :meth:`integral_histograms` builds one float32 integral histogram per type (bins stacked as planes, as
    the reference accumulates them in float32 per type); :meth:`describe` reads the 2x2 cells of every
    track's patch with one gather for all types. Work buffers are allocated once per scale and reused.
    """

    def __init__(
        self, layout: DescriptorLayout, height: int, width: int, epsilon: float, min_flow: float
    ) -> None:
        self.layout, self.height, self.width = layout, height, width
        self.epsilon, self.min_flow = np.float32(epsilon), min_flow
        n_pixels = height * width
        n_bins = layout.orientation_bins
        # Bin planes of one type at a time: the orientation bins, then a wrap-around plane (bin n_bins, folded
        # into bin 0) and a plane that takes the zero-weight upper share of angles of exactly 360 degrees.
        self.scratch = np.empty((n_bins + 2) * n_pixels, dtype=np.float32)
        # The integral histograms of all types, one after the other in one buffer (one gather reads all).
        sizes = [(b * height + 1) * (width + 1) for b in layout.bins]
        starts = np.cumsum([0, *sizes[:-1]])
        self.integral = np.empty(sum(sizes), dtype=np.float32)
        self.integrals = [
            self.integral[start : start + size].reshape(-1, width + 1)
            for start, size in zip(starts, sizes, strict=True)
        ]
        self.pixel = np.arange(n_pixels, dtype=np.intp)
        self.fields = np.empty((6, height, width), dtype=np.float32)  # gradients of the image and the flow
        self.magnitude = np.empty((height, width), dtype=np.float32)
        self.angle = np.empty((height, width), dtype=np.float32)
        self.fraction = np.empty(n_pixels, dtype=np.float32)
        self.lower = np.empty(n_pixels, dtype=np.intp)
        self.upper = np.empty(n_pixels, dtype=np.intp)
        self.still = np.empty(n_pixels, dtype=bool)
        steps = np.arange(layout.nxy_cell + 1, dtype=np.intp) * (layout.patch_size // layout.nxy_cell)
        stride = width + 1
        plane_rows = np.concatenate([np.arange(b) * height for b in layout.bins])
        plane_starts = np.repeat(starts, layout.bins)
        # Offsets [x corner, y corner, plane] of the cell corners in the integral buffer.
        self.corner_offsets = (
            steps[:, None, None]
            + steps[None, :, None] * stride
            + (plane_starts + plane_rows * stride)[None, None, :]
        ).ravel()
        self.type_starts = np.cumsum([0, *layout.bins[:-1]])

    def _orientation_planes(self, x: np.ndarray, y: np.ndarray, zero_bin_below: float | None) -> np.ndarray:
        """Per-pixel orientation histogram of the field (x, y) ``[h, w] float32``: planes ``[B * h * w]
        float32`` (plane b holds bin b; a view of the scratch buffer, valid until the next call). Each
        magnitude is split linearly between the two nearest of the orientation bins over 360 degrees; with
        ``zero_bin_below``, vectors no longer than it count 1 in the extra last bin instead."""
        n_bins = self.layout.orientation_bins
        n_pixels = x.size
        magnitude, position = self.magnitude, self.angle
        cv2.cartToPolar(x, y, magnitude=magnitude, angle=position, angleInDegrees=True)
        magnitude, position = magnitude.ravel(), position.ravel()
        if zero_bin_below is not None:
            np.less_equal(magnitude, zero_bin_below, out=self.still)
            np.copyto(magnitude, 0.0, where=self.still)  # still pixels count in the zero bin only
        lower, upper, fraction = self.lower, self.upper, self.fraction
        position *= np.float32(n_bins / 360.0)
        np.copyto(lower, position, casting="unsafe")  # truncation is the floor: angles are non-negative
        np.copyto(fraction, lower, casting="unsafe")
        np.subtract(position, fraction, out=fraction)
        upper_weight = np.multiply(fraction, magnitude, out=fraction)
        lower_weight = np.subtract(magnitude, upper_weight, out=magnitude)
        lower *= n_pixels
        lower += self.pixel
        np.add(lower, n_pixels, out=upper)
        scratch = self.scratch
        scratch.fill(0.0)
        scratch[lower] = lower_weight
        scratch[upper] = upper_weight
        planes = scratch.reshape(n_bins + 2, n_pixels)
        planes[0] += planes[n_bins]  # bin n_bins is bin 0 (360 degrees); no pixel adds to both
        if zero_bin_below is not None:
            np.copyto(planes[n_bins], self.still)
            return scratch[: (n_bins + 1) * n_pixels]
        return scratch[: n_bins * n_pixels]

    def integral_histograms(self, prev_grey: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """``prev_grey`` ``[h, w] uint8`` (HOG) and compensated ``flow`` ``[2, h, w] float32`` (HOF, MBH) →
        the integral histograms, one per type: ``[B * h + 1, w + 1] float32`` integral images of its ``B``
        stacked bin planes, flattened one after the other (a reused buffer, valid until the next call)."""
        grad = self.fields
        cv2.Sobel(prev_grey, cv2.CV_32F, 1, 0, dst=grad[0], ksize=1)
        cv2.Sobel(prev_grey, cv2.CV_32F, 0, 1, dst=grad[1], ksize=1)
        for component, out in ((flow[0], grad[2:4]), (flow[1], grad[4:6])):
            cv2.Sobel(component, cv2.CV_32F, 1, 0, dst=out[0], ksize=1)
            cv2.Sobel(component, cv2.CV_32F, 0, 1, dst=out[1], ksize=1)
        fields = [(grad[0], grad[1], None), (flow[0], flow[1], self.min_flow), (grad[2], grad[3], None)]
        fields.append((grad[4], grad[5], None))
        for integral, (x, y, zero_bin_below) in zip(self.integrals, fields, strict=True):
            planes = self._orientation_planes(x, y, zero_bin_below)
            cv2.integral(planes.reshape(-1, self.width), sum=integral, sdepth=cv2.CV_32F)
        return self.integral

    def describe(self, integral: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Frame descriptors ``[n, frame_dim] float32`` (a transposed view) of tracks at ``points`` ``[n, 2]
        float32`` from the ``integral`` histograms: per type, cells with x outer and y inner, bins inner-most
        (the reference's order), each type's cells L1-normalised together after adding ``epsilon`` per bin,
        square-rooted.

        The gather reads one corner of one bin plane for all tracks at a time (track-inner layout), so that
        tracks given in row-major order of their positions read each plane nearly sequentially."""
        n = len(points)
        layout = self.layout
        if n == 0:
            return np.empty((0, layout.frame_dim), dtype=np.float32)
        left, top = patch_corners(points, self.width, self.height, layout.patch_size)
        base = top * (self.width + 1) + left
        corner_index = self.corner_offsets[:, None] + base[None, :]
        cells = layout.nxy_cell
        corners = np.take(integral, corner_index).reshape(cells + 1, cells + 1, -1, n)
        sums = corners[1:, 1:] - corners[1:, :-1]
        sums -= corners[:-1, 1:]
        sums += corners[:-1, :-1]
        np.maximum(sums, 0.0, out=sums)
        sums += self.epsilon
        out = np.empty((layout.frame_dim, n), dtype=np.float32)
        column = 0
        for start, n_bins in zip(self.type_starts, layout.bins, strict=True):
            block = sums[:, :, start : start + n_bins]
            n_columns = cells * cells * n_bins
            normalised = out[column : column + n_columns].reshape(cells, cells, n_bins, n)
            np.divide(block, block.sum(axis=(0, 1, 2)), out=normalised)
            np.sqrt(normalised, out=normalised)
            column += n_columns
        return out.T


def patch_corners(
    points: np.ndarray, width: int, height: int, patch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners ``[n] intp`` (x, y) of the descriptor patches of ``points`` ``[n, 2] float32``: the
    patch is centred on the rounded point and clamped into the frame (the reference's ``GetRect``)."""
    half = patch_size // 2
    x = np.clip(np.rint(points[:, 0]).astype(np.intp) - half, 0, width - patch_size)
    y = np.clip(np.rint(points[:, 1]).astype(np.intp) - half, 0, height - patch_size)
    return x, y


def pool_descriptors(sums: np.ndarray, layout: DescriptorLayout) -> np.ndarray:
    """Temporal-cell sums ``[m, nt_cell, frame_dim] float32`` → averaged descriptors ``[m, sum(type_dims)]``
    in the reference's column order: per type, its temporal cells one after the other."""
    mean = sums * np.float32(1.0 / layout.frames_per_cell)
    blocks = []
    column = 0
    for n_bins in layout.bins:
        dim = n_bins * layout.nxy_cell**2
        blocks.append(mean[:, :, column : column + dim].reshape(len(sums), layout.nt_cell * dim))
        column += dim
    return np.concatenate(blocks, axis=1)


@dataclass(frozen=True)
class TrajectoryTests:
    """Thresholds of the reference's ``IsValid`` and ``IsCameraMotion``, in full-resolution pixels."""

    min_var: float
    max_var: float
    max_dis: float
    max_dis_ratio: float
    min_camera_displacement: float


def trajectory_features(
    points: np.ndarray, displacements: np.ndarray, tests: TrajectoryTests
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validity, fields and shape of finished tracks (positions already multiplied by their scale).

    ``points`` ``[m, L + 1, 2]``: tracked positions; ``displacements`` ``[m, L, 2]``: compensated flow at
    each step. Returns ``keep`` ``[m] bool`` (not static: both standard deviations below ``min_var``; not
    erratic: one above ``max_var``; no single step over ``max_dis`` px and ``max_dis_ratio`` of the length;
    some compensated step over ``min_camera_displacement`` px), ``fields`` ``[m, 5] float32`` (mean x, mean y,
    std x, std y, length of the uncompensated track) and ``shape`` ``[m, 2L] float32`` (compensated steps
    divided by the sum of their magnitudes).
    """
    mean = points.mean(axis=1)
    std = np.sqrt(((points - mean[:, None, :]) ** 2).mean(axis=1))
    steps = np.linalg.norm(np.diff(points, axis=1), axis=2)
    length = steps.sum(axis=1)
    longest = steps.max(axis=1)
    static = (std[:, 0] < tests.min_var) & (std[:, 1] < tests.min_var)
    erratic = (std[:, 0] > tests.max_var) | (std[:, 1] > tests.max_var)
    jump = (longest > tests.max_dis) & (longest > length * tests.max_dis_ratio)
    magnitudes = np.linalg.norm(displacements, axis=2)
    camera = magnitudes.max(axis=1) <= tests.min_camera_displacement
    keep = ~(static | erratic | jump | camera)
    total = magnitudes.sum(axis=1, keepdims=True)
    shape = displacements.reshape(len(points), -1) / np.where(total > 0, total, 1.0)
    fields = np.concatenate([mean, std, length[:, None]], axis=1).astype(np.float32)
    return keep, fields, shape.astype(np.float32)
