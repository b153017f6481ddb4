"""k-means of the cluster stage, on numpy and on faiss, beside a plain scikit-learn ``KMeans`` call, same run,
same vectors.

Vectors imitate count-sketched Fisher vectors: ``--videos`` unit-norm rows of ``--dim`` (2000) dimensions
from ``--classes`` overlapping latent classes. Every backend clusters them into K = default_n_clusters(V)
clusters (or ``--clusters``) with ``--init`` seeding (greedy k-means++ or random points) and 20 Lloyd
iterations at most (the paper's setting), seed 1234; BLAS and OpenMP (faiss' too) are limited to
``--threads``. Reported: seconds, iterations, inertia (sum of squared distances), NMI against the latent
classes, the share of labels faiss and numpy agree on, and with k-means++ the seeding's share of the time
(scikit-learn's ``kmeans_plusplus`` and ours, timed again on their own). Run::

    python benchmarks/bench_cluster.py
    python benchmarks/bench_cluster.py --videos 24000 --clusters 6000 --init random --backends numpy,faiss
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
from motionfit.tasks.prior.kmeans_faiss import faiss_kmeans


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
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads of every backend")
    parser.add_argument("--init", choices=["k-means++", "random"], default="k-means++")
    parser.add_argument("--backends", default="scikit-learn,numpy,faiss", help="comma-separated")
    args = parser.parse_args()
    vectors, classes = sketch_like_vectors(np.random.default_rng(0), args.videos, args.dim, args.classes)
    n_clusters = args.clusters or default_n_clusters(args.videos)
    print(f"k-means: {args.videos} x {args.dim} vectors, K {n_clusters}, max_iter {args.max_iter}")
    print(f"threads: {args.threads}; seeding: {args.init}")
    results = {}
    with threadpool_limits(args.threads):
        for backend in args.backends.split(","):
            start = time.perf_counter()
            if backend == "scikit-learn":
                fitted = KMeans(
                    n_clusters, init=args.init, n_init=1, max_iter=args.max_iter, random_state=args.seed
                ).fit(vectors)
                result = (fitted.n_iter_, fitted.inertia_, fitted.labels_)
            else:
                run = {"numpy": kmeans, "faiss": faiss_kmeans}[backend]
                if backend == "faiss":
                    import faiss

                    faiss.omp_set_num_threads(args.threads)
                found = run(vectors, n_clusters, seed=args.seed, max_iter=args.max_iter, init=args.init)
                result = (found.n_iter, found.inertia, found.labels)
            results[backend] = (time.perf_counter() - start, *result)
        if args.init == "k-means++":
            start = time.perf_counter()
            kmeans_plusplus(vectors, n_clusters, random_state=args.seed)
            reference_seeding = time.perf_counter() - start
            start = time.perf_counter()
            kmeans_plus_plus(vectors, n_clusters, np.random.default_rng(args.seed))
            seeding = time.perf_counter() - start
    for name, (elapsed, n_iter, inertia, labels) in results.items():
        print(
            f"  {name:12s} {elapsed:8.2f} s  {n_iter:3d} iterations ({elapsed / max(n_iter, 1):.2f} s each) "
            f"inertia {inertia:10.2f}  NMI vs classes {normalized_mutual_info_score(classes, labels):.4f}"
        )
    if "scikit-learn" in results and "numpy" in results:
        print(f"  numpy speed-up over scikit-learn x{results['scikit-learn'][0] / results['numpy'][0]:.2f}")
    if "faiss" in results and "numpy" in results:
        agree = float(np.mean(results["faiss"][3] == results["numpy"][3]))
        ratio = results["faiss"][2] / results["numpy"][2]
        per_iteration = {name: result[0] / max(result[1], 1) for name, result in results.items()}
        print(
            f"  faiss: x{per_iteration['numpy'] / per_iteration['faiss']:.2f} the numpy speed per iteration "
            f"(numpy stops once the labels settle, faiss runs max_iter); labels equal for "
            f"{100 * agree:.2f} % of the videos, inertia ratio {ratio:.6f}"
        )
    if args.init == "k-means++":
        print(
            f"  of which k-means++ seeding: scikit-learn {reference_seeding:.2f} s, motionfit {seeding:.2f} s"
        )


if __name__ == "__main__":
    main()
