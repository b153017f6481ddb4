"""Config sections of the IDT-prior stages: the Fisher-vector model (``fisher``, with its GMM) and the
k-means clustering of the videos (``cluster``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ComputeDtype = Literal["float32", "float64"]
DescriptorType = Literal["trajectory", "hog", "hof", "mbh", "mbhx", "mbhy"]
Encoding = Literal["paper_eq5_6", "authors_code_unnormalised"]


class GmmConfig(BaseModel):
    """EM parameters of the diagonal GMM (256 components as in the IDT-prior paper, else scikit-learn's)."""

    model_config = ConfigDict(extra="forbid")

    n_components: int = Field(
        256, ge=1, description="Gaussians (256 in the IDT-prior paper and Wang & Schmid 2013)."
    )
    max_iter: int = Field(
        100, ge=1, description="EM iterations at most (scikit-learn's default; the authors' code uses 200)."
    )
    tol: float = Field(
        1e-3,
        ge=0,
        description="Stop when the mean log-likelihood per descriptor changes by less (scikit-learn).",
    )
    n_init: int = Field(
        1, ge=1, description="Initialisations, the most likely fit is kept (the authors' code uses 2)."
    )
    init_kmeans_iter: int = Field(
        20,
        ge=0,
        description="Lloyd iterations of the k-means++-seeded k-means giving the initial means (0: seeds).",
    )
    reg_covar: float = Field(1e-6, ge=0, description="Added to every variance (scikit-learn's reg_covar).")
    variance_floor: float = Field(
        1e-4,
        ge=0,
        description="Lower bound of each variance as a fraction of that dimension's data variance.",
    )
    seed: int = Field(0, description="Seed of the initialisation; init i uses seed + i.")
    compute_dtype: ComputeDtype = Field(
        "float32", description="Precision of the posterior and statistics products (fit and encoding)."
    )
    batch_size: int = Field(
        32768,
        ge=1,
        description="Descriptors per batch: bounds the [batch_size, n_components] posterior array.",
    )


class FisherConfig(BaseModel):
    """Fisher-vector parameters (IDT-prior paper Sec. 3.3; Wang & Schmid 2013; Perronnin et al. 2010)."""

    model_config = ConfigDict(extra="forbid")

    descriptor_types: tuple[DescriptorType, ...] = Field(
        ("trajectory", "hog", "hof", "mbh"),
        min_length=1,
        description="IDT descriptor types encoded (Wang & Schmid 2013: trajectory, HOG, HOF, MBH).",
    )
    pca_scope: Literal["per_type", "joint"] = Field(
        "per_type",
        description="PCA and GMM per descriptor type (Wang & Schmid), or one over all types (authors' code).",
    )
    pca_reduction: Literal["variance", "dim_fraction"] = Field(
        "variance", description="Keep components up to pca_variance_kept, or a fixed fraction of the dims."
    )
    pca_variance_kept: float = Field(
        0.9, gt=0, le=1, description="Variance kept by PCA (90 %, authors' code)."
    )
    pca_dim_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Fraction of dims kept with pca_reduction='dim_fraction' (half: W&S 2013).",
    )
    gmm: GmmConfig = Field(default_factory=GmmConfig, description="Diagonal GMM vocabulary (256 components).")
    encoding: Encoding = Field(
        "paper_eq5_6",
        description="Eq. 5-6 of the IDT-prior paper, or the unnormalised variant in the authors' code.",
    )
    power_alpha: float = Field(
        0.5, ge=0, le=1, description="Power normalisation sign(z)|z|^alpha (Perronnin)."
    )
    sketch_dim: int = Field(2000, ge=1, description="Count-sketch dimensions (2000 in the IDT-prior paper).")
    sketch_seed: int = Field(0, description="Seed of the count sketch's buckets and signs.")
    n_sample_videos: int = Field(
        3500, ge=1, description="Videos sampled to fit PCA and GMM (3500 in the paper)."
    )
    descriptors_per_video: int = Field(
        500, ge=1, description="Descriptors sampled per video (500 in the paper)."
    )
    sample_seed: int = Field(0, description="Seed of the video and descriptor sample.")


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
    backend: Literal["numpy", "faiss"] = Field(
        "numpy",
        description="Who runs Lloyd's iterations: the project's numpy k-means, or faiss (the authors' "
        "library, on its GPU where it has one; the optional extra 'faiss') from the same seeds. faiss runs "
        "all max_iter iterations (tol does not apply).",
    )
    init: Literal["k-means++", "random"] = Field(
        "k-means++",
        description="Greedy k-means++ seeding (K passes over the data), or K distinct random videos: faiss' "
        "default, which the authors used, and the cheaper choice at Kinetics scale (K 6000).",
    )
