import math

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans

from motionfit.tasks.prior.clustering import (
    cluster_quality,
    cluster_sizes,
    cluster_videos,
    default_n_clusters,
)
from motionfit.tasks.prior.config import ClusterConfig
from motionfit.tasks.prior.kmeans import kmeans


def blobs(
    n_per_blob: int = 30, n_blobs: int = 4, dim: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(n_blobs, dim))
    labels = np.repeat(np.arange(n_blobs), n_per_blob)
    return (centers[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def test_cluster_videos_recovers_well_separated_blobs_in_every_run():
    vectors, labels = blobs()
    ids = [f"v{i:03d}" for i in range(len(vectors))]
    clusters = cluster_videos(vectors, ids, ClusterConfig(n_clusters=4, seeds=(1234, 1235, 1236)))
    assert list(clusters.columns) == ["video_id", "run", "k", "cluster"]
    assert len(clusters) == 3 * len(vectors)
    assert sorted(clusters["run"].unique()) == [0, 1, 2] and set(clusters["k"]) == {4}
    assert clusters["video_id"].iloc[:3].tolist() == ids[:3]
    quality = cluster_quality(clusters, pd.Series([f"class{c}" for c in labels], index=ids))
    assert quality["run"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(quality["nmi"], 1.0)
    np.testing.assert_allclose(quality["purity"], 1.0)
    assert (quality["n_videos"] == len(vectors)).all()


def test_cluster_quality_on_known_partitions():
    ids = ["a", "b", "c", "d", "e", "f"]
    clusters = pd.DataFrame(
        {
            "video_id": ids * 4,
            "run": np.repeat([0, 1, 2, 3], 6),
            "k": 3,
            # run 0: a relabelled copy of the classes; run 1: {a,b} {c,d,e} {f}; run 2: one cluster;
            # run 3: one cluster per video
            "cluster": [*[2, 2, 0, 0, 1, 1], *[0, 0, 1, 1, 1, 2], *[0] * 6, *range(6)],
        }
    )
    labels = pd.Series(["x", "x", "y", "y", "z", "z"], index=ids)
    quality = cluster_quality(clusters, labels).set_index("run")
    assert quality.loc[0, "nmi"] == pytest.approx(1.0)
    assert quality.loc[0, "purity"] == pytest.approx(1.0)
    assert quality.loc[1, "purity"] == pytest.approx(5 / 6)  # cluster {c,d,e} has two y and one z
    assert quality.loc[2, "purity"] == pytest.approx(1 / 3)  # the majority class of the single cluster
    assert quality.loc[2, "nmi"] == pytest.approx(0.0, abs=1e-12)
    assert quality.loc[3, "purity"] == pytest.approx(1.0)
    # NMI (arithmetic mean normalisation) of singletons: I = H(classes) = ln 3, H(clusters) = ln 6
    assert quality.loc[3, "nmi"] == pytest.approx(2 * np.log(3) / (np.log(3) + np.log(6)))
    # AMI: 1 for the relabelled copy, 0 (chance) for one cluster and for singletons, whose NMI is high
    np.testing.assert_allclose(quality["ami"].to_numpy()[[0, 2, 3]], [1.0, 0.0, 0.0], atol=1e-12)
    assert 0.0 < quality.loc[1, "ami"] < quality.loc[1, "nmi"]


def test_cluster_quality_nmi_and_purity_by_hand():
    # clusters {a, a, b} and {b, b, b}: purity 5/6; NMI by hand (natural logarithms, arithmetic mean)
    ids = [f"v{i}" for i in range(6)]
    clusters = pd.DataFrame({"video_id": ids, "run": 0, "k": 2, "cluster": [0, 0, 0, 1, 1, 1]})
    quality = cluster_quality(clusters, pd.Series(["a", "a", "b", "b", "b", "b"], index=ids))
    mutual = (1 / 3) * math.log(2) + (1 / 6) * math.log(0.5) + 0.5 * math.log(1.5)
    entropy_labels = -(1 / 3) * math.log(1 / 3) - (2 / 3) * math.log(2 / 3)
    assert quality.loc[0, "nmi"] == pytest.approx(mutual / ((entropy_labels + math.log(2)) / 2))
    assert quality.loc[0, "purity"] == pytest.approx(5 / 6)


def test_cluster_quality_of_an_independent_partition_is_zero_and_ignores_unlabelled_videos():
    clusters = pd.DataFrame(
        {"video_id": ["a", "b", "c", "d", "e"], "run": 0, "k": 2, "cluster": [0, 1, 0, 1, 1]}
    )
    labels = pd.Series({"a": "x", "b": "x", "c": "y", "d": "y", "e": None})
    quality = cluster_quality(clusters, labels)
    assert quality.loc[0, "n_videos"] == 4
    assert quality.loc[0, "nmi"] == pytest.approx(0.0, abs=1e-12)
    assert quality.loc[0, "purity"] == pytest.approx(0.5)


def test_cluster_sizes_counts_videos_per_cluster_largest_first():
    clusters = pd.DataFrame({"video_id": list("abcd"), "run": 0, "k": 3, "cluster": [2, 0, 2, 2]})
    sizes = cluster_sizes(clusters)
    assert sizes[["cluster", "size"]].values.tolist() == [[2, 3], [0, 1]]


def test_default_n_clusters_scales_with_the_data_set():
    assert default_n_clusters(240_000) == 6000  # Kinetics-400 train, as in the paper
    assert default_n_clusters(13_320) == 333  # UCF101
    assert default_n_clusters(50) == 2
    assert default_n_clusters(3) == 2
    assert default_n_clusters(2_000_000) == 6000
    with pytest.raises(ValueError, match="n_videos"):
        default_n_clusters(1)


def test_kmeans_matches_scikit_learn_inertia_and_is_seeded():
    vectors, _ = blobs(n_per_blob=40, n_blobs=6, dim=8, seed=3)
    ours = kmeans(vectors, 6, seed=0)
    reference = KMeans(6, n_init=1, random_state=0, max_iter=20).fit(vectors)
    assert ours.inertia == pytest.approx(reference.inertia_, rel=1e-3)
    np.testing.assert_array_equal(ours.labels, kmeans(vectors, 6, seed=0).labels)
    recomputed = ((vectors - ours.centers[ours.labels]) ** 2).sum()
    assert ours.inertia == pytest.approx(float(recomputed), rel=1e-4)


def test_kmeans_handles_fewer_distinct_points_than_clusters():
    points = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 12 points, 3 distinct
    result = kmeans(points, 5, seed=0)
    assert result.labels.min() >= 0 and result.labels.max() < 5
    assert np.isfinite(result.centers).all()
    assert result.inertia == pytest.approx(0.0, abs=1e-6)


def test_kmeans_with_random_initialisation_also_separates_blobs():
    vectors, labels = blobs(seed=5)
    result = kmeans(vectors, 4, seed=2, init="random")
    contingency = pd.crosstab(result.labels, labels)
    assert (contingency.gt(0).sum(axis=1) == 1).all()


def test_clustering_rejects_bad_inputs():
    vectors, _ = blobs(n_per_blob=2, n_blobs=2)
    with pytest.raises(ValueError, match="video_ids has 3 entries"):
        cluster_videos(vectors, ["a", "b", "c"], ClusterConfig(n_clusters=2))
    with pytest.raises(ValueError, match="exceeds the number of videos"):
        cluster_videos(vectors, list("abcd"), ClusterConfig(n_clusters=5))
    with pytest.raises(ValueError, match="vectors has shape"):
        cluster_videos(vectors[0], list("abcd"), ClusterConfig(n_clusters=2))
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.full((4, 2), np.nan), 2)
    with pytest.raises(ValueError, match="lacks columns"):
        cluster_quality(pd.DataFrame({"video_id": ["a"]}), pd.Series({"a": 1}))
