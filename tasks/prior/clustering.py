"""k-means clustering of videos in IDT Fisher-vector space, and its quality against labels.

The IDT-prior paper (Tokmakov, Hebert, Schmid) clusters the count-sketched Fisher vectors of all videos
with k-means (K = 6000 on Kinetics, 20 iterations), m = 3 times with different seeds (1234-1236 in the
authors' code) with :func:`~motionfit.tasks.prior.kmeans.kmeans`; Local Aggregation then uses the m
clusterings as its prior.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from motionfit.tasks.prior.config import ClusterConfig
from motionfit.tasks.prior.kmeans import kmeans
from motionfit.tasks.prior.kmeans_faiss import faiss_kmeans

logger = logging.getLogger(__name__)

CODE_VERSION = 1
"""The stage's code version: bump it when its output changes (see :mod:`motionfit.tasks.per_video`)."""

CLUSTER_COLUMNS = ("video_id", "run", "k", "cluster")


def default_n_clusters(n_videos: int, videos_per_cluster: float = 40.0, max_clusters: int = 6000) -> int:
    """K scaled to the data: the paper's 6000 clusters for ~240k videos, at least 2, at most ``n_videos``."""
    if n_videos < 2:
        raise ValueError(f"n_videos must be at least 2 to cluster, got {n_videos}")
    scaled = round(n_videos / videos_per_cluster)
    return int(min(max(scaled, 2), max_clusters, n_videos))


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
        if config.backend == "faiss":
            result = faiss_kmeans(vectors, n_clusters, seed=seed, max_iter=config.max_iter, init=config.init)
        else:
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
