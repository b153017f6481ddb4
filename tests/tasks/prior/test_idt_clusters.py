"""The IDT prior on the bundled synthetic data set: trajectories, Fisher vectors and k-means, with the
tiny preset's parameters, give clusters that follow the motion classes."""

import numpy as np
import pandas as pd

from motionfit.config import load_config
from motionfit.tasks.data.synth import VideoSpec, render_video
from motionfit.tasks.idt.extractor import extract_trajectories
from motionfit.tasks.prior.clustering import cluster_quality, cluster_videos
from motionfit.tasks.prior.fisher import encode_video, fit_fisher_model

VIDEOS_PER_CLASS = 8


def test_idt_clusters_of_the_synthetic_data_set_follow_its_motion_classes():
    config = load_config(preset="tiny")
    classes = config.synth.classes
    labels = [name for name in classes for _ in range(VIDEOS_PER_CLASS)]
    ids = [f"src_{index:03d}" for index in range(len(labels))]
    trajectories = [
        extract_trajectories(render_video(VideoSpec("source", index, name, ""), config.synth), config.idt)
        for index, name in enumerate(labels)
    ]
    arrays = [result.trajectories for result in trajectories]
    with_tracks = pd.Series([len(array) > 0 for array in arrays]).groupby(labels).mean()
    assert (with_tracks >= 0.75).all(), with_tracks  # zoom and rotation too, with the preset's IDT
    model = fit_fisher_model(arrays, config.fisher, config.idt.columns())
    cluster_config = config.cluster.model_copy(update={"n_clusters": len(classes)})
    clusters = cluster_videos(np.stack([encode_video(a, model) for a in arrays]), ids, cluster_config)
    quality = cluster_quality(clusters, pd.Series(labels, index=ids))

    rng = np.random.default_rng(0)
    first_run = clusters[clusters["run"] == 0]
    chance = [
        cluster_quality(first_run, pd.Series(rng.permutation(labels), index=ids))["nmi"].iloc[0]
        for _ in range(100)
    ]
    assert quality["nmi"].min() > max(chance) + 0.15, (quality, max(chance))
    assert quality["nmi"].mean() > 3 * np.mean(chance), (quality, np.mean(chance))
    assert quality["ami"].min() > 0.3, quality
    assert quality["purity"].mean() > 0.45, quality  # all in one cluster: 0.2
