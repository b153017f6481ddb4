"""faiss as the k-means backend: the same clustering as the numpy k-means from the same seeds."""

import sys

import numpy as np
import pytest

from motionfit.tasks.prior.clustering import cluster_videos
from motionfit.tasks.prior.config import ClusterConfig
from motionfit.tasks.prior.kmeans import kmeans
from motionfit.tasks.prior.kmeans_faiss import faiss_kmeans


def overlapping_classes(n_points: int = 2000, n_classes: int = 20, dim: int = 32) -> np.ndarray:
    """Points of overlapping Gaussian classes: Lloyd's iterations move for several rounds."""
    rng = np.random.default_rng(0)
    centres = 1.5 * rng.normal(size=(n_classes, dim))
    return (centres[rng.integers(0, n_classes, n_points)] + rng.normal(size=(n_points, dim))).astype(
        np.float32
    )


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_faiss_gives_the_numpy_clustering_from_the_same_seeds(init: str) -> None:
    points = overlapping_classes()
    ours = kmeans(points, 50, seed=3, max_iter=15, init=init)
    theirs = faiss_kmeans(points, 50, seed=3, max_iter=15, init=init)
    assert ours.n_iter > 3, "the iterations must move the centres"
    np.testing.assert_array_equal(theirs.labels, ours.labels)
    np.testing.assert_allclose(theirs.centers, ours.centers, atol=1e-5)
    assert theirs.inertia == pytest.approx(ours.inertia, rel=1e-6)
    assert not np.array_equal(faiss_kmeans(points, 50, seed=4, max_iter=15, init=init).labels, theirs.labels)


def test_cluster_stage_on_faiss_keeps_the_table_contract() -> None:
    points = overlapping_classes(n_points=300)
    ids = [f"v{i:03d}" for i in range(len(points))]
    config = ClusterConfig(n_clusters=8, seeds=(1234, 1235))
    on_faiss = cluster_videos(points, ids, config.model_copy(update={"backend": "faiss"}))
    on_numpy = cluster_videos(points, ids, config)
    assert list(on_faiss.columns) == ["video_id", "run", "k", "cluster"] and len(on_faiss) == 2 * len(ids)
    np.testing.assert_array_equal(on_faiss["cluster"], on_numpy["cluster"])


def test_missing_faiss_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"motionfit\[faiss\]"):
        faiss_kmeans(overlapping_classes(n_points=50), 3)
