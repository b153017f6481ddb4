"""Fisher-vector encoding and GMM fitting beside scikit-image and scikit-learn, same run, same inputs.

1. Encoding: ``fisher_encode`` (Eq. 5-6) against scikit-image's ``fisher_vector`` on the same descriptors
   and the same 256-component diagonal GMM (scikit-image's weight block dropped and its variance block
   negated, which equals Eq. 5-6); throughput in descriptors/s and videos/s, and the largest absolute
   difference of the values. Also the full per-video path (PCA per descriptor type, four Fisher vectors,
   normalisation, count sketch) of ``encode_video`` on IDT-shaped rows.
2. GMM fitting: ``fit_gmm`` against ``sklearn.mixture.GaussianMixture`` (diagonal, k-means initialisation,
   same tolerance and iteration cap) on the same sample; time, iterations and mean log-likelihood.

Descriptors are synthetic (a Gaussian mixture with heavier tails, as PCA'd IDT descriptors look); BLAS and
OpenMP are limited to ``--threads`` for both sides. Best of ``--repeats`` timings. Run::

    python benchmarks/bench_fisher.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.feature import fisher_vector as skimage_fisher_vector
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits
from timing import fastest_seconds

from motionfit.tasks.idt.columns import N_TRAJECTORY_FIELDS, REFERENCE_COLUMNS
from motionfit.tasks.prior.config import FisherConfig, GmmConfig
from motionfit.tasks.prior.fisher import encode_video, fisher_encode, fit_fisher_model
from motionfit.tasks.prior.gmm import DiagonalGmm, fit_gmm, mean_log_likelihood


def synthetic_descriptors(rng: np.random.Generator, n_rows: int, dim: int, n_modes: int = 64) -> np.ndarray:
    """``[n_rows, dim]`` float32 from a mixture of ``n_modes`` Gaussians with Student-t noise."""
    centers = rng.normal(scale=2.0, size=(n_modes, dim))
    scales = rng.uniform(0.3, 1.5, size=(n_modes, dim))
    modes = rng.integers(0, n_modes, size=n_rows)
    noise = rng.standard_t(df=5, size=(n_rows, dim))
    return (centers[modes] + scales[modes] * noise).astype(np.float32)


def as_scikit_learn(gmm: DiagonalGmm) -> GaussianMixture:
    """A fitted ``GaussianMixture`` holding exactly ``gmm``'s parameters (what scikit-image expects)."""
    mixture = GaussianMixture(gmm.n_components, covariance_type="diag")
    mixture.weights_ = gmm.weights
    mixture.means_ = gmm.means
    mixture.covariances_ = gmm.variances
    mixture.precisions_cholesky_ = 1.0 / np.sqrt(gmm.variances)
    mixture.precisions_ = 1.0 / gmm.variances
    mixture.converged_ = True
    return mixture


def skimage_eq5_6(descriptors: np.ndarray, mixture: GaussianMixture) -> np.ndarray:
    values = skimage_fisher_vector(descriptors, mixture)[mixture.n_components :]
    values[values.size // 2 :] *= -1.0
    return values


def bench_encoding(args: argparse.Namespace, rng: np.random.Generator) -> None:
    sample = synthetic_descriptors(rng, 20_000, args.dim)
    gmm = fit_gmm(sample, GmmConfig(n_components=args.n_components, max_iter=10, seed=0)).gmm
    mixture = as_scikit_learn(gmm)
    videos = [synthetic_descriptors(rng, args.descriptors_per_video, args.dim) for _ in range(args.videos)]
    n_descriptors = sum(len(video) for video in videos)
    print(
        f"encoding: {args.videos} videos x {args.descriptors_per_video} descriptors, D {args.dim}, "
        f"K {args.n_components}"
    )
    reference = [skimage_eq5_6(video.astype(np.float64), mixture) for video in videos]
    seconds = fastest_seconds(
        lambda: [skimage_eq5_6(video.astype(np.float64), mixture) for video in videos], args.repeats
    )
    print(
        f"  scikit-image fisher_vector   {n_descriptors / seconds:12,.0f} descriptors/s "
        f"{args.videos / seconds:8.2f} videos/s"
    )
    for dtype in ("float32", "float64"):
        ours = [fisher_encode(video, gmm, dtype=dtype) for video in videos]
        difference = max(float(np.abs(a - b).max()) for a, b in zip(ours, reference, strict=True))
        largest = max(float(np.abs(b).max()) for b in reference)
        ours_seconds = fastest_seconds(
            lambda dtype=dtype: [fisher_encode(v, gmm, dtype=dtype) for v in videos], args.repeats
        )
        print(
            f"  motionfit fisher_encode {dtype} {n_descriptors / ours_seconds:12,.0f} descriptors/s "
            f"{args.videos / ours_seconds:8.2f} videos/s  x{seconds / ours_seconds:.2f}  "
            f"max |diff| {difference:.2e} (largest value {largest:.2f})"
        )


def bench_encode_video(args: argparse.Namespace, rng: np.random.Generator) -> None:
    def idt_rows(n_rows: int) -> np.ndarray:
        fields = rng.uniform(0, 100, size=(n_rows, N_TRAJECTORY_FIELDS)).astype(np.float32)
        descriptor_dim = REFERENCE_COLUMNS.row_dim - N_TRAJECTORY_FIELDS
        return np.concatenate([fields, np.abs(synthetic_descriptors(rng, n_rows, descriptor_dim))], axis=1)

    config = FisherConfig(gmm=GmmConfig(n_components=args.n_components, max_iter=10), n_sample_videos=40)
    model = fit_fisher_model([idt_rows(500) for _ in range(40)], config)
    videos = [idt_rows(args.descriptors_per_video) for _ in range(args.videos)]
    seconds = fastest_seconds(lambda: [encode_video(video, model) for video in videos], args.repeats)
    dims = ", ".join(f"{block.name} {len(block.pca.components)}" for block in model.blocks)
    print(f"encode_video: PCA per type ({dims}), Fisher dim {model.fisher_dim} -> {model.sketch.sketch_dim}")
    print(
        f"  motionfit encode_video       {args.videos * args.descriptors_per_video / seconds:12,.0f} "
        f"descriptors/s {args.videos / seconds:8.2f} videos/s"
    )


def bench_gmm_fit(args: argparse.Namespace, rng: np.random.Generator) -> None:
    sample = synthetic_descriptors(rng, args.fit_rows, args.fit_dim)
    print(f"GMM fit: {args.fit_rows} x {args.fit_dim}, K {args.fit_components}, tol 1e-3, max_iter 100")
    start = time.perf_counter()
    reference = GaussianMixture(args.fit_components, covariance_type="diag", random_state=0).fit(sample)
    reference_seconds = time.perf_counter() - start
    print(
        f"  scikit-learn GaussianMixture {reference_seconds:7.1f} s  {reference.n_iter_:3d} iterations  "
        f"mean log-likelihood {reference.score(sample):.4f}"
    )
    for dtype in ("float32", "float64"):
        config = GmmConfig(n_components=args.fit_components, compute_dtype=dtype, seed=0)
        start = time.perf_counter()
        fit = fit_gmm(sample, config)
        seconds = time.perf_counter() - start
        score = mean_log_likelihood(sample, fit.gmm)
        print(
            f"  motionfit fit_gmm {dtype}      {seconds:7.1f} s  {fit.n_iter:3d} iterations  "
            f"mean log-likelihood {score:.4f}  x{reference_seconds / seconds:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--descriptors-per-video", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=100, help="descriptor dims after PCA")
    parser.add_argument("--n-components", type=int, default=256)
    parser.add_argument("--fit-rows", type=int, default=30_000)
    parser.add_argument("--fit-dim", type=int, default=64)
    parser.add_argument("--fit-components", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for both sides")
    args = parser.parse_args()
    with threadpool_limits(args.threads):
        print(f"threads: {args.threads}")
        bench_encoding(args, np.random.default_rng(0))
        bench_encode_video(args, np.random.default_rng(1))
        bench_gmm_fit(args, np.random.default_rng(2))


if __name__ == "__main__":
    main()
