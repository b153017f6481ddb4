"""The IDT prior: PCA and a diagonal GMM fitted on IDT descriptors, Fisher vectors power- and
L2-normalised and count-sketched, and k-means clusterings of the videos in that space."""

from motionfit.tasks import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "FisherConfig": "config",
        "GmmConfig": "config",
        "ClusterConfig": "config",
        "fit_pca": "pca",
        "fit_gmm": "gmm",
        "FisherModel": "fisher",
        "sample_descriptors": "fisher",
        "fit_fisher_model": "fisher",
        "encode_video": "fisher",
        "save_fisher_model": "fisher",
        "load_fisher_model": "fisher",
        "make_count_sketch": "sketch",
        "count_sketch": "sketch",
        "kmeans": "kmeans",
        "cluster_videos": "clustering",
        "cluster_quality": "clustering",
        "cluster_sizes": "clustering",
    },
)
