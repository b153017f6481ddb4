"""k-means clustering of videos in IDT Fisher-vector space, and its quality against labels.

The IDT-prior paper (Tokmakov, Hebert, Schmid) clusters the count-sketched Fisher vectors of all videos
with k-means (K = 6000 on Kinetics, 20 iterations), m = 3 times with different seeds (1234-1236 in the
authors' code); Local Aggregation then uses the m clusterings as its prior. :func:`kmeans` is a batched
Lloyd's algorithm on numpy (distances by one matrix product per batch, centroid sums by a sparse one-hot
product), seeded with greedy k-means++ (Arthur & Vassilvitskii 2007); it also initialises the Fisher-vector
GMM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

logger = logging.getLogger(__name__)

CLUSTER_COLUMNS = ("video_id", "run", "k", "cluster")
DISTANCE_BLOCK_ELEMENTS = 1 << 23  # batch rows so that one [batch, K] distance block holds ~8M float32


class ClusterConfig(BaseModel):
    """Parameters of the video clustering (IDT-prior paper, Sec. 3.3, and its authors' code)."""

    model_config = ConfigDict(extra="forbid")

    n_clusters: int | None = Field(
        None,
        ge=2,
        description="K per run; None: default_n_clusters(n_videos) (the paper: 6000 on Kinetics-400).",
    )
    videos_per_cluster: float = Field(
        40.0, gt=0, description="Scale of the default K: about 240k Kinetics videos / 6000 clusters."
    )
    max_clusters: int = Field(6000, ge=2, description="Upper bound of the default K (the paper's K).")
    seeds: tuple[int, ...] = Field(
        (1234, 1235, 1236),
        min_length=1,
        description="One k-means run per seed: m = 3 runs, seeds 1234-1236 in the authors' code.",
    )
    max_iter: int = Field(
        20, ge=0, description="Lloyd iterations per run (20 in the authors' faiss k-means)."
    )
    tol: float = Field(
        0.0,
        ge=0,
        description="Stop early when the squared centre shift falls below tol x the data's mean variance; "
        "0 runs max_iter iterations unless the assignment stops changing.",
    )
    init: Literal["k-means++", "random"] = Field(
        "k-means++",
        description="Greedy k-means++ seeding (K passes over the data), or K distinct random videos: faiss' "
        "default, which the authors used, and the cheaper choice at Kinetics scale (K 6000).",
    )


@dataclass(frozen=True)
class KMeansResult:
    """``labels`` ``[V] int64``, ``centers`` ``[K, D] float32``, sum of squared distances, iterations run."""

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int


def default_n_clusters(n_videos: int, videos_per_cluster: float = 40.0, max_clusters: int = 6000) -> int:
    """K scaled to the data: the paper's 6000 clusters for ~240k videos, at least 2, at most ``n_videos``."""
    if n_videos < 2:
        raise ValueError(f"n_videos must be at least 2 to cluster, got {n_videos}")
    scaled = round(n_videos / videos_per_cluster)
    return int(min(max(scaled, 2), max_clusters, n_videos))


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
    points = np.ascontiguousarray(points, dtype=np.float32)
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"points has shape {points.shape}; expected a non-empty [V, D] array")
    if not 1 <= n_clusters <= len(points):
        raise ValueError(
            f"n_clusters must be in [1, {len(points)}] for {len(points)} points, got {n_clusters}"
        )
    if not np.isfinite(points).all():
        raise ValueError("points contains NaN or infinite values")
    rng = np.random.default_rng(seed)
    if init == "k-means++":
        centers = kmeans_plus_plus(points, n_clusters, rng)
    else:
        centers = points[np.sort(rng.choice(len(points), size=n_clusters, replace=False))].copy()
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


def cluster_videos(vectors: np.ndarray, video_ids: Sequence[str], config: ClusterConfig) -> pd.DataFrame:
    """Cluster videos ``vectors`` ``[V, D]`` (sketched Fisher vectors) once per seed in ``config.seeds``.

    Returns the clusters table of the storage contract: one row per (video, run) with columns
    ``video_id`` (str), ``run`` (int, 0..m-1), ``k`` (number of clusters) and ``cluster`` (int in [0, k)).
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors has shape {vectors.shape}; expected [V, D]")
    if len(video_ids) != len(vectors):
        raise ValueError(f"video_ids has {len(video_ids)} entries but vectors has {len(vectors)} rows")
    n_clusters = config.n_clusters or default_n_clusters(
        len(vectors), config.videos_per_cluster, config.max_clusters
    )
    if n_clusters > len(vectors):
        raise ValueError(f"n_clusters {n_clusters} exceeds the number of videos {len(vectors)}")
    ids = np.asarray([str(video_id) for video_id in video_ids], dtype=object)
    runs = []
    for run, seed in enumerate(config.seeds):
        result = kmeans(
            vectors, n_clusters, seed=seed, max_iter=config.max_iter, tol=config.tol, init=config.init
        )
        logger.info(
            "k-means run %d (seed %d): K %d, %d iterations, inertia %.6g",
            run,
            seed,
            n_clusters,
            result.n_iter,
            result.inertia,
        )
        runs.append(
            pd.DataFrame(
                {
                    "video_id": ids,
                    "run": np.full(len(ids), run, dtype=np.int64),
                    "k": np.full(len(ids), n_clusters, dtype=np.int64),
                    "cluster": result.labels,
                }
            )
        )
    return pd.concat(runs, ignore_index=True)


def _check_clusters_table(clusters: pd.DataFrame) -> None:
    missing = [column for column in CLUSTER_COLUMNS if column not in clusters.columns]
    if missing:
        raise ValueError(f"clusters table lacks columns {missing}; expected {list(CLUSTER_COLUMNS)}")


def cluster_quality(clusters: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """NMI, AMI and purity of each run of ``clusters`` against ``labels`` (a Series indexed by video_id).

    Videos without a label (absent from ``labels`` or NaN) are left out. Returns one row per run with
    columns ``run, k, n_videos, nmi, ami, purity``. AMI is the mutual information adjusted for chance (0 for
    a random partition, whatever K): on a few hundred videos NMI alone is far above 0 even for random
    clusters. Purity: the fraction of videos whose cluster's most common label is their own.
    """
    _check_clusters_table(clusters)
    if labels.index.has_duplicates:
        raise ValueError("labels must be indexed by unique video_id")
    rows = []
    for (run, k), group in clusters.groupby(["run", "k"], sort=True):
        video_labels = group["video_id"].map(labels)
        labelled = video_labels.notna().to_numpy()
        truth = video_labels.to_numpy()[labelled].astype(str)
        predicted = group["cluster"].to_numpy()[labelled]
        if len(truth) == 0:
            rows.append({"run": run, "k": k, "n_videos": 0, "nmi": np.nan, "ami": np.nan, "purity": np.nan})
            continue
        contingency = contingency_matrix(truth, predicted, sparse=True)  # [classes, clusters]
        purity = float(contingency.max(axis=0).sum()) / len(truth)
        nmi = float(normalized_mutual_info_score(truth, predicted))
        ami = float(adjusted_mutual_info_score(truth, predicted))
        rows.append({"run": run, "k": k, "n_videos": len(truth), "nmi": nmi, "ami": ami, "purity": purity})
    return pd.DataFrame(rows, columns=["run", "k", "n_videos", "nmi", "ami", "purity"])


def cluster_sizes(clusters: pd.DataFrame) -> pd.DataFrame:
    """Videos per cluster: one row per (run, k, cluster) with column ``size``, largest first per run."""
    _check_clusters_table(clusters)
    sizes = clusters.groupby(["run", "k", "cluster"]).size().rename("size").reset_index()
    return sizes.sort_values(["run", "size", "cluster"], ascending=[True, False, True], ignore_index=True)
