"""k-means on faiss (Johnson, Douze & Jégou), the library the IDT-prior paper's authors clustered Kinetics
with: the same Lloyd's iterations as :func:`motionfit.tasks.prior.kmeans.kmeans` from the same seeds, on
faiss' BLAS-blocked CPU kernels or on a GPU where faiss has one. faiss is an optional dependency
(``pip install 'motionfit[faiss]'``, or faiss-gpu).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from motionfit.tasks.prior.kmeans import KMeansResult, checked_points, initial_centers


def faiss_kmeans(
    points: np.ndarray,
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 20,
    init: Literal["k-means++", "random"] = "k-means++",
) -> KMeansResult:
    """Lloyd's k-means of ``points`` ``[V, D]`` (float32) into ``n_clusters`` clusters by faiss, seeded as
    :func:`~motionfit.tasks.prior.kmeans.kmeans` seeds (same ``seed``, same ``init``), ``max_iter``
    iterations on every point (faiss' subsampling to 256 points per centre is off); the labels are the
    assignment to the returned centres. Empty clusters are refilled by faiss' rule (splitting a large
    cluster), not by the numpy version's farthest point."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "cluster.backend 'faiss' needs faiss: pip install 'motionfit[faiss]' (or faiss-gpu)"
        ) from error
    points = checked_points(points, n_clusters)
    centers = initial_centers(points, n_clusters, seed, init)
    clustering = faiss.Kmeans(
        points.shape[1],
        n_clusters,
        niter=max_iter,
        seed=seed,
        max_points_per_centroid=len(points),
        min_points_per_centroid=1,
        gpu=faiss.get_num_gpus() > 0,
    )
    if max_iter > 0:
        clustering.train(points, init_centroids=centers)
        centers = clustering.centroids
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(centers)
    distances, labels = index.search(points, 1)
    inertia = float(distances.sum(dtype=np.float64))
    return KMeansResult(
        labels[:, 0].astype(np.int64), np.asarray(centers, dtype=np.float32), inertia, max_iter
    )
