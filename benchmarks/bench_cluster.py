"""k-means of the cluster stage beside a plain scikit-learn ``KMeans`` call, same run, same vectors.

Vectors imitate count-sketched Fisher vectors: ``--videos`` unit-norm rows of ``--dim`` (2000) dimensions
from ``--classes`` overlapping latent classes. Both sides cluster them into K = default_n_clusters(V)
clusters (or ``--clusters``) with greedy k-means++ seeding and 20 Lloyd iterations at most (the paper's
setting), seed 1234; BLAS and OpenMP are limited to ``--threads`` for both. Reported: seconds, iterations,
inertia (sum of squared distances), NMI against the latent classes, and the seeding's share of the time
(scikit-learn's ``kmeans_plusplus`` and ours, timed again on their own). Run::

    python benchmarks/bench_cluster.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.metrics import normalized_mutual_info_score
from threadpoolctl import threadpool_limits

from motionfit.tasks.prior.clustering import default_n_clusters
from motionfit.tasks.prior.kmeans import kmeans, kmeans_plus_plus


def sketch_like_vectors(
    rng: np.random.Generator, n_videos: int, dim: int, n_classes: int, latent_dim: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """``[n_videos, dim]`` float32 unit rows and their latent class ``[n_videos]``.

    Classes are overlapping Gaussians in a ``latent_dim`` subspace embedded in ``dim`` dimensions plus a
    little isotropic noise: a low effective dimension and weak cluster structure, as sketched Fisher
    vectors have, so that Lloyd's algorithm runs all its iterations.
    """
    centres = rng.normal(size=(n_classes, latent_dim))
    classes = rng.integers(0, n_classes, size=n_videos)
    latent = centres[classes] + rng.normal(size=(n_videos, latent_dim))
    embedding = np.linalg.qr(rng.normal(size=(dim, latent_dim)))[0].T  # [latent_dim, dim], orthonormal rows
    vectors = 0.3 * latent @ embedding + 0.02 * rng.normal(size=(n_videos, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), classes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=12_000)
    parser.add_argument("--dim", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=None, help="K (default: default_n_clusters(videos))")
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for both sides")
    args = parser.parse_args()
    vectors, classes = sketch_like_vectors(np.random.default_rng(0), args.videos, args.dim, args.classes)
    n_clusters = args.clusters or default_n_clusters(args.videos)
    print(f"k-means: {args.videos} x {args.dim} vectors, K {n_clusters}, max_iter {args.max_iter}")
    print(f"threads: {args.threads}")
    with threadpool_limits(args.threads):
        start = time.perf_counter()
        reference = KMeans(n_clusters, n_init=1, max_iter=args.max_iter, random_state=args.seed).fit(vectors)
        reference_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ours = kmeans(vectors, n_clusters, seed=args.seed, max_iter=args.max_iter)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        kmeans_plusplus(vectors, n_clusters, random_state=args.seed)
        reference_seeding = time.perf_counter() - start
        start = time.perf_counter()
        kmeans_plus_plus(vectors, n_clusters, np.random.default_rng(args.seed))
        seeding = time.perf_counter() - start
    for name, elapsed, n_iter, inertia, labels in (
        ("scikit-learn KMeans", reference_seconds, reference.n_iter_, reference.inertia_, reference.labels_),
        ("motionfit kmeans   ", seconds, ours.n_iter, ours.inertia, ours.labels),
    ):
        print(
            f"  {name} {elapsed:7.2f} s  {n_iter:3d} iterations  inertia {inertia:10.2f}  "
            f"NMI vs classes {normalized_mutual_info_score(classes, labels):.4f}"
        )
    print(f"  speed-up x{reference_seconds / seconds:.2f}")
    print(f"  of which k-means++ seeding: scikit-learn {reference_seeding:.2f} s, motionfit {seeding:.2f} s")


if __name__ == "__main__":
    main()
