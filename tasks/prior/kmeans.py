"""k-means on numpy: a batched Lloyd's algorithm seeded with greedy k-means++ (Arthur & Vassilvitskii 2007).

Distances come from one matrix product per batch of rows (a ``[batch, K]`` block of about 8M float32 at a
time), centroid sums from a sparse one-hot product. It clusters the videos in Fisher-vector space
(:mod:`motionfit.tasks.prior.clustering`) and initialises the Fisher-vector GMM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse

logger = logging.getLogger(__name__)

DISTANCE_BLOCK_ELEMENTS = 1 << 23  # batch rows so that one [batch, K] distance block holds ~8M float32


@dataclass(frozen=True)
class KMeansResult:
    """``labels`` ``[V] int64``, ``centers`` ``[K, D] float32``, sum of squared distances, iterations run."""

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int


def _row_batch(n_clusters: int) -> int:
    return max(1, DISTANCE_BLOCK_ELEMENTS // n_clusters)


def _assign(
    points: np.ndarray, point_sq_norms: np.ndarray, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each point: labels ``[V] int64`` and squared distances ``[V] float32``."""
    center_sq_norms = np.einsum("kd,kd->k", centers, centers)
    labels = np.empty(len(points), dtype=np.int64)
    distances = np.empty(len(points), dtype=np.float32)
    step = _row_batch(len(centers))
    for start in range(0, len(points), step):
        stop = start + step
        block = points[start:stop] @ centers.T  # [B, K]
        block *= -2.0
        block += center_sq_norms
        nearest = block.argmin(axis=1)
        labels[start:stop] = nearest
        distances[start:stop] = block[np.arange(len(block)), nearest] + point_sq_norms[start:stop]
    np.maximum(distances, 0.0, out=distances)
    return labels, distances


def _update_centers(
    points: np.ndarray, labels: np.ndarray, distances: np.ndarray, n_clusters: int
) -> np.ndarray:
    """Mean of each cluster ``[K, D] float32``; an empty cluster takes the point farthest from its centre."""
    one_hot = sparse.csr_matrix(
        (np.ones(len(points), dtype=np.float32), (labels, np.arange(len(points)))),
        shape=(n_clusters, len(points)),
    )
    counts = np.bincount(labels, minlength=n_clusters)
    centers = np.asarray(one_hot @ points, dtype=np.float32)
    filled = counts > 0
    centers[filled] /= counts[filled, None]
    empty = np.flatnonzero(~filled)
    if len(empty):
        farthest = np.argpartition(distances, len(distances) - len(empty))[-len(empty) :]
        centers[empty] = points[farthest]
        logger.debug("k-means: %d empty clusters moved to the farthest points", len(empty))
    return centers


def kmeans_plus_plus(
    points: np.ndarray, n_clusters: int, rng: np.random.Generator, n_local_trials: int | None = None
) -> np.ndarray:
    """Greedy k-means++ seeds ``[K, D] float32`` of ``points`` ``[V, D] float32``.

    Each step draws ``n_local_trials`` candidates (default ``2 + int(ln K)``, as in Arthur & Vassilvitskii
    and scikit-learn) with probability proportional to the squared distance to the nearest seed so far and
    keeps the one that lowers the total squared distance most; the candidates' distances to all points are
    one matrix product.
    """
    n_local_trials = n_local_trials or 2 + int(np.log(n_clusters))
    point_sq_norms = np.einsum("vd,vd->v", points, points)
    seeds = np.empty((n_clusters, points.shape[1]), dtype=np.float32)
    first = int(rng.integers(len(points)))
    seeds[0] = points[first]
    nearest_sq = np.maximum(point_sq_norms - 2.0 * (points @ seeds[0]) + point_sq_norms[first], 0.0)
    for k in range(1, n_clusters):
        cumulative = np.cumsum(nearest_sq, dtype=np.float64)
        if cumulative[-1] <= 0.0:  # fewer distinct points than clusters: draw uniformly
            candidates = rng.integers(len(points), size=n_local_trials)
        else:
            draws = rng.random(n_local_trials) * cumulative[-1]
            candidates = np.minimum(np.searchsorted(cumulative, draws, side="right"), len(points) - 1)
        candidate_sq = point_sq_norms[:, None] - 2.0 * (points @ points[candidates].T)
        candidate_sq += point_sq_norms[candidates]
        np.maximum(candidate_sq, 0.0, out=candidate_sq)
        np.minimum(candidate_sq, nearest_sq[:, None], out=candidate_sq)  # [V, trials]
        best = int(np.argmin(candidate_sq.sum(axis=0, dtype=np.float64)))
        seeds[k] = points[candidates[best]]
        nearest_sq = candidate_sq[:, best]
    return seeds


def checked_points(points: np.ndarray, n_clusters: int) -> np.ndarray:
    """``points`` as a C-contiguous float32 ``[V, D]`` array, or ``ValueError`` when k-means cannot run on
    them with ``n_clusters`` clusters."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"points has shape {points.shape}; expected a non-empty [V, D] array")
    if not 1 <= n_clusters <= len(points):
        raise ValueError(
            f"n_clusters must be in [1, {len(points)}] for {len(points)} points, got {n_clusters}"
        )
    if not np.isfinite(points).all():
        raise ValueError("points contains NaN or infinite values")
    return points


def initial_centers(
    points: np.ndarray, n_clusters: int, seed: int, init: Literal["k-means++", "random"]
) -> np.ndarray:
    """Seeds ``[K, D] float32`` of Lloyd's iterations: greedy k-means++, or K distinct random points."""
    rng = np.random.default_rng(seed)
    if init == "k-means++":
        return kmeans_plus_plus(points, n_clusters, rng)
    return points[np.sort(rng.choice(len(points), size=n_clusters, replace=False))].copy()


def kmeans(
    points: np.ndarray,
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 20,
    tol: float = 0.0,
    init: Literal["k-means++", "random"] = "k-means++",
) -> KMeansResult:
    """Lloyd's k-means of ``points`` ``[V, D]`` (computed in float32) into ``n_clusters`` clusters.

    Runs at most ``max_iter`` assignment + update iterations and stops earlier when the assignment no
    longer changes (or the squared centre shift is below ``tol`` x the mean variance of ``points``); the
    returned labels are the assignment to the returned centres.
    """
    points = checked_points(points, n_clusters)
    centers = initial_centers(points, n_clusters, seed, init)
    point_sq_norms = np.einsum("vd,vd->v", points, points)
    shift_tol = tol * float(points.var(axis=0).mean()) if tol > 0 else 0.0
    labels, distances = _assign(points, point_sq_norms, centers)
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        new_centers = _update_centers(points, labels, distances, n_clusters)
        shift = float(np.sum((new_centers - centers) ** 2))
        centers = new_centers
        new_labels, distances = _assign(points, point_sq_norms, centers)
        unchanged = np.array_equal(new_labels, labels)
        labels = new_labels
        if unchanged or shift <= shift_tol:
            break
    return KMeansResult(labels, centers, float(distances.sum(dtype=np.float64)), n_iter)
