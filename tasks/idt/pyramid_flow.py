"""Dense optical flow over the scale pyramid of Improved Dense Trajectories (Wang & Schmid, ICCV 2013).

The reference release tracks points at every spatial scale with its own flow field: a Farnebäck flow
(Farnebäck, SCIA 2003) computed coarse to fine over exactly the trajectory pyramid (factor sqrt(2)), where
each level's flow is median-filtered (5x5) before it initialises the next finer level and before it moves the
points of that scale. Polynomial expansions are computed once per frame and reused by the next frame pair.
This module re-implements that scheme with whole-image OpenCV/numpy operations (and torch's ``grid_sample``
for the bilinear gather): the polynomial expansion (five separable filters, replicated borders), the matrix
update with bilinear sampling of the second expansion at the displaced positions and a damped border, the
Gaussian-weighted solve with a 1e-3 regulariser, and the median filter. With ``median_ksize=1`` it reproduces
OpenCV's ``calcOpticalFlowFarneback`` (``OPTFLOW_FARNEBACK_GAUSSIAN``, same pyramid) to about 1e-5 px.

Pipeline mode replaces the Farnebäck flow with precomputed full-resolution flow, resized to each scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

# Damping of the matrix update in the 5 outermost rows/columns (Farnebäck's reference implementation).
_BORDER_WEIGHTS = np.array([0.14, 0.14, 0.4472, 0.4472, 0.4472], dtype=np.float32)


@dataclass(frozen=True)
class ScalePyramid:
    """Spatial scales of the trajectories: ``scales`` ``[S] float32`` (1, sqrt(2), 2, ...) and ``sizes``
    ``(width, height)`` per scale, the first being the frame size."""

    scales: np.ndarray
    sizes: tuple[tuple[int, int], ...]

    @property
    def n_scales(self) -> int:
        return len(self.sizes)


def scale_pyramid(
    width: int, height: int, max_scales: int, scale_stride: float, patch_size: int
) -> ScalePyramid:
    """Scales as the reference ``InitPry``: keep dividing min(width, height) by ``scale_stride`` while it is
    at least ``patch_size``; at most ``max_scales`` scales, at least one. Arithmetic in float32 as there."""
    stride = np.float32(scale_stride)
    min_size = np.float32(min(width, height))
    n_layers = 0
    while min_size >= patch_size:
        min_size = np.float32(min_size / stride)
        n_layers += 1
    n_scales = min(max_scales, max(n_layers, 1))
    scales = np.ones(n_scales, dtype=np.float32)
    for i in range(1, n_scales):
        scales[i] = np.float32(scales[i - 1] * stride)
    sizes = tuple((int(np.rint(np.float32(width) / s)), int(np.rint(np.float32(height) / s))) for s in scales)
    return ScalePyramid(scales=scales, sizes=sizes)


def image_pyramid(grey: np.ndarray, pyramid: ScalePyramid) -> list[np.ndarray]:
    """``[H, W] uint8`` frame resized (bilinear) level by level to every scale: list of ``[h, w] uint8``."""
    levels = [grey]
    for size in pyramid.sizes[1:]:
        levels.append(cv2.resize(levels[-1], size, interpolation=cv2.INTER_LINEAR))
    return levels


def _poly_kernels(poly_n: int, poly_sigma: float) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Separable (x, y) kernel pairs ``[2n+1] float32`` giving the 5 quadratic-fit coefficients (y, x, y^2,
    x^2, xy) of Farnebäck's polynomial expansion: Gaussian applicability g, moments x*g and x^2*g, combined
    with the inverse Gram matrix of the basis (1, x, y, x^2, y^2, xy)."""
    sigma = poly_sigma if poly_sigma > np.finfo(np.float32).eps else poly_n * 0.3
    x = np.arange(-poly_n, poly_n + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2.0 * sigma * sigma)).astype(np.float32)
    g = (g / g.astype(np.float64).sum()).astype(np.float32).astype(np.float64)
    xg, xxg = x * g, x * x * g
    gg = np.outer(g, g)
    yy, xx = np.meshgrid(x, x, indexing="ij")
    gram = np.zeros((6, 6))
    gram[0, 0] = gg.sum()
    gram[1, 1] = gram[2, 2] = gram[0, 3] = gram[3, 0] = gram[0, 4] = gram[4, 0] = (gg * xx**2).sum()
    gram[3, 3] = gram[4, 4] = (gg * xx**4).sum()
    gram[5, 5] = gram[3, 4] = gram[4, 3] = (gg * xx**2 * yy**2).sum()
    inv = np.linalg.inv(gram)
    ig11, ig03, ig33, ig55 = inv[1, 1], inv[0, 3], inv[3, 3], inv[5, 5]
    square = g * ig03 + xxg * ig33  # fit of the squared term: constant and second moment combined
    pairs = ((g, xg * ig11), (xg * ig11, g), (g, square), (square, g), (xg * ig55, xg))
    return tuple((kx.astype(np.float32), ky.astype(np.float32)) for kx, ky in pairs)


def _poly_expand(image: np.ndarray, kernels: tuple[tuple[np.ndarray, np.ndarray], ...]) -> np.ndarray:
    """Quadratic polynomial coefficients of ``[h, w] float32`` → planes ``[5, h, w] float32`` in the order
    (y, x, y^2, x^2, xy) the matrix update reads them; replicated borders."""
    out = np.empty((5, *image.shape), dtype=np.float32)
    for plane, (kernel_x, kernel_y) in zip(out, kernels, strict=True):
        cv2.sepFilter2D(image, -1, kernel_x, kernel_y, dst=plane, borderType=cv2.BORDER_REPLICATE)
    return out


class _Level:
    """One pyramid level of the Farnebäck solver: constants (pixel grid, border damping) and a workspace of
    ``[h, w]`` float32 buffers reused by every frame, so that the per-frame updates allocate almost nothing.
    """

    def __init__(self, width: int, height: int, winsize: int) -> None:
        self.width, self.height = width, height
        self.xs = np.broadcast_to(np.arange(width, dtype=np.float32)[None, :], (height, width))
        self.ys = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], (height, width))
        wx = np.ones(width, dtype=np.float32)
        wy = np.ones(height, dtype=np.float32)
        n = min(len(_BORDER_WEIGHTS), width)
        wx[:n] = _BORDER_WEIGHTS[:n]
        wx[width - n :] *= _BORDER_WEIGHTS[:n][::-1]
        n = min(len(_BORDER_WEIGHTS), height)
        wy[:n] = _BORDER_WEIGHTS[:n]
        wy[height - n :] *= _BORDER_WEIGHTS[:n][::-1]
        self.border = (wy[:, None] * wx[None, :]).astype(np.float32)
        self.half_border = self.border * np.float32(0.5)
        half = winsize // 2
        self.blur_size, self.blur_sigma = (2 * half + 1, 2 * half + 1), half * 0.3
        self.grid_scale = (np.float32(2.0 / max(width - 1, 1)), np.float32(2.0 / max(height - 1, 1)))
        shape = (height, width)
        self.grid = np.empty((1, height, width, 2), dtype=np.float32)
        self.valid = np.empty(shape, dtype=bool)
        self.inside = np.empty(shape, dtype=bool)
        self.work = np.empty((6, *shape), dtype=np.float32)
        self.m = np.empty((5, *shape), dtype=np.float32)
        self.blurred = np.empty((5, *shape), dtype=np.float32)

    def bilinear(self, planes: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Bilinear samples ``[C, h, w] float32`` of ``planes`` at (x + dx, y + dy), zero where the 2x2
        neighbourhood leaves the image (``self.valid`` is False there). Torch's ``grid_sample`` does the
        gather and the weighting in one pass (several times faster than numpy gathers); inside the image it
        is exact bilinear interpolation up to float32 rounding of the normalised coordinates (about 1e-5 px).
        """
        fx, fy = self.work[0], self.work[1]
        np.add(self.xs, dx, out=fx)
        np.add(self.ys, dy, out=fy)
        valid, inside = self.valid, self.inside
        np.greater_equal(fx, 0, out=valid)
        valid &= np.less(fx, self.width - 1, out=inside)
        valid &= np.greater_equal(fy, 0, out=inside)
        valid &= np.less(fy, self.height - 1, out=inside)
        grid = self.grid[0]
        np.multiply(fx, self.grid_scale[0], out=grid[..., 0])
        np.multiply(fy, self.grid_scale[1], out=grid[..., 1])
        grid -= np.float32(1.0)
        samples = torch.nn.functional.grid_sample(
            torch.from_numpy(planes)[None],
            torch.from_numpy(self.grid),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[0].numpy()
        outside = np.flatnonzero(~valid)
        if len(outside):
            samples.reshape(len(planes), -1)[:, outside] = 0.0
        return samples

    def update_matrices(self, r0: np.ndarray, r1: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Farnebäck's per-pixel system, planes ``[5, h, w] float32`` (G11, G12, G22, h1, h2) in the
        workspace, for the flow ``[2, h, w]``: the second expansion ``r1`` is sampled at the displaced
        positions. Inside the image the quadratic terms are the mean of both expansions', outside the first
        expansion's; the 5 outermost rows and columns are damped."""
        dx, dy = flow[0], flow[1]
        r1_at = self.bilinear(r1, dx, dy)
        scale, r4, r5, r6 = self.work[2], self.work[3], self.work[4], self.work[5]
        np.copyto(scale, self.border)
        np.copyto(scale, self.half_border, where=self.valid)  # mean of two terms, damped
        np.add(r0[2], r1_at[2], out=r4)
        r4 *= scale
        np.add(r0[3], r1_at[3], out=r5)
        r5 *= scale
        scale *= np.float32(0.5)
        np.add(r0[4], r1_at[4], out=r6)
        r6 *= scale
        r2 = np.subtract(r0[0], r1_at[0], out=r1_at[0])
        r2 *= self.half_border
        cv2.accumulateProduct(r4, dy, r2)
        cv2.accumulateProduct(r6, dx, r2)
        r3 = np.subtract(r0[1], r1_at[1], out=r1_at[1])
        r3 *= self.half_border
        cv2.accumulateProduct(r6, dy, r3)
        cv2.accumulateProduct(r5, dx, r3)
        m = self.m
        np.multiply(r6, r6, out=m[0])
        m[2] = m[0]
        cv2.accumulateSquare(r4, m[0])
        cv2.accumulateSquare(r5, m[2])
        np.add(r4, r5, out=m[1])
        m[1] *= r6
        np.multiply(r4, r2, out=m[3])
        cv2.accumulateProduct(r6, r3, m[3])
        np.multiply(r6, r2, out=m[4])
        cv2.accumulateProduct(r5, r3, m[4])
        return m

    def solve_flow(self, m: np.ndarray) -> np.ndarray:
        """Gaussian-weighted (sigma 0.3 * winsize/2, replicated border) neighbourhood solve of the 2x2
        systems → new flow ``[2, h, w] float32``; a 1e-3 regulariser keeps flat regions at zero."""
        for plane, out in zip(m, self.blurred, strict=True):
            cv2.GaussianBlur(plane, self.blur_size, self.blur_sigma, dst=out, borderType=cv2.BORDER_REPLICATE)
        g11, g12, g22, h1, h2 = self.blurred
        inv_det, product = self.work[0], self.work[1]
        np.multiply(g11, g22, out=inv_det)
        inv_det -= np.multiply(g12, g12, out=product)
        inv_det += np.float32(1e-3)
        np.reciprocal(inv_det, out=inv_det)
        flow = np.empty((2, self.height, self.width), dtype=np.float32)
        np.multiply(g11, h2, out=flow[0])
        flow[0] -= np.multiply(g12, h1, out=product)
        flow[0] *= inv_det
        np.multiply(g22, h1, out=flow[1])
        flow[1] -= np.multiply(g12, h2, out=product)
        flow[1] *= inv_det
        return flow


def median_blur_flow(flow: np.ndarray, ksize: int) -> np.ndarray:
    """Per-component median filter of flow planes ``[2, h, w] float32`` (ksize 3 or 5; 1: unchanged)."""
    if ksize <= 1:
        return flow
    return np.stack([cv2.medianBlur(component, ksize) for component in flow])


def resize_flow(flow: np.ndarray, size: tuple[int, int], factor: float) -> np.ndarray:
    """Flow planes ``[2, h, w] float32`` resized (bilinear) to ``size`` (width, height), times ``factor``."""
    return np.stack([cv2.resize(component, size, interpolation=cv2.INTER_LINEAR) for component in flow]) * (
        np.float32(factor)
    )


class FarnebackPyramid:
    """Farnebäck flow at every scale of a :class:`ScalePyramid`, as the IDT reference computes it.

    ``expand`` turns a frame into its per-scale polynomial expansions; ``flow`` turns the expansions of two
    frames into per-scale flow planes ``[2, h, w] float32`` (x then y displacement in pixels of that scale,
    from the first frame to the second).
    """

    def __init__(
        self,
        pyramid: ScalePyramid,
        poly_n: int,
        poly_sigma: float,
        winsize: int,
        iterations: int,
        median_ksize: int,
        scale_stride: float,
    ) -> None:
        self.pyramid = pyramid
        self.kernels = _poly_kernels(poly_n, poly_sigma)
        self.winsize = winsize
        self.iterations = iterations
        self.median_ksize = median_ksize
        self.scale_stride = float(np.float32(scale_stride))
        self.levels = [_Level(w, h, winsize) for w, h in pyramid.sizes]

    def expand(self, grey: np.ndarray) -> list[np.ndarray]:
        """``[H, W] uint8`` → per scale ``[5, h, w] float32``: Gaussian pre-smoothing of the full frame
        (sigma (scale - 1) / 2), bilinear resize, polynomial expansion."""
        image = grey.astype(np.float32)
        expansions = []
        for scale, size in zip(self.pyramid.scales, self.pyramid.sizes, strict=True):
            sigma = (float(scale) - 1.0) * 0.5
            ksize = max(int(np.rint(sigma * 5)) | 1, 3)
            smooth = cv2.GaussianBlur(image, (ksize, ksize), sigma, sigmaY=sigma)
            if size != (image.shape[1], image.shape[0]):
                smooth = cv2.resize(smooth, size, interpolation=cv2.INTER_LINEAR)
            expansions.append(_poly_expand(smooth, self.kernels))
        return expansions

    def flow(self, prev_expansions: list[np.ndarray], expansions: list[np.ndarray]) -> list[np.ndarray]:
        """Coarse-to-fine flow; each level starts from the (median-filtered) coarser one, resized and
        multiplied by the scale stride. Returns per scale ``[2, h, w] float32``."""
        flows: list[np.ndarray] = [np.empty(0)] * self.pyramid.n_scales
        flow: np.ndarray | None = None
        for k in range(self.pyramid.n_scales - 1, -1, -1):
            level = self.levels[k]
            if flow is None:
                flow = np.zeros((2, level.height, level.width), dtype=np.float32)
            else:
                flow = resize_flow(flow, (level.width, level.height), self.scale_stride)
            r0, r1 = prev_expansions[k], expansions[k]
            m = level.update_matrices(r0, r1, flow)
            for i in range(self.iterations):
                flow = level.solve_flow(m)
                if i < self.iterations - 1:
                    m = level.update_matrices(r0, r1, flow)
            flow = median_blur_flow(flow, self.median_ksize)
            flows[k] = flow
        return flows


def resize_flow_pyramid(flow: np.ndarray, pyramid: ScalePyramid, median_ksize: int) -> list[np.ndarray]:
    """Full-resolution flow planes ``[2, H, W] float32`` → per scale ``[2, h, w] float32`` (bilinear resize,
    values divided by the scale), median-filtered like the Farnebäck levels."""
    flows = []
    for scale, size in zip(pyramid.scales, pyramid.sizes, strict=True):
        level = flow if scale == 1 else resize_flow(flow, size, 1.0 / float(scale))
        flows.append(median_blur_flow(np.ascontiguousarray(level, dtype=np.float32), median_ksize))
    return flows
