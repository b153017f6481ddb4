"""Diagonal-covariance Gaussian mixture fitted by batched, vectorised EM: the Fisher-vector vocabulary.

The log-density of every descriptor under every component is one matrix product of ``[x, x^2]`` with the
components' ``[mu / sigma^2, -1 / (2 sigma^2)]`` plus a per-component constant; posteriors follow by a
log-sum-exp per row, and the zeroth, first and second order statistics by one more product. The same
statistics serve the M-step here and the Fisher-vector encoding in :mod:`motionfit.tasks.prior.fisher`.
Products run in ``compute_dtype`` batch by batch; sums over batches are accumulated in float64.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from motionfit.tasks.prior.config import ComputeDtype, GmmConfig
from motionfit.tasks.prior.kmeans import kmeans

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiagonalGmm:
    """``weights`` ``[K]``, ``means`` ``[K, D]`` and ``variances`` ``[K, D]`` (all float64)."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    def __post_init__(self) -> None:
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.variances.shape != (k, d):
            raise ValueError(
                f"GMM weights {self.weights.shape}, means {self.means.shape} and variances "
                f"{self.variances.shape} must have shapes [K], [K, D], [K, D]"
            )
        if np.any(self.variances <= 0) or np.any(self.weights <= 0):
            raise ValueError("GMM variances and weights must be positive")

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]


@dataclass(frozen=True)
class GmmStatistics:
    """Sums over descriptors of ``q`` ``[K]``, ``q x`` ``[K, D]``, ``q x^2`` ``[K, D]`` and of log p(x)."""

    zeroth: np.ndarray
    first: np.ndarray
    second: np.ndarray
    log_likelihood: float


@dataclass(frozen=True)
class GmmFit:
    """A fitted GMM, its mean log-likelihood per descriptor at the last E-step, iterations, convergence."""

    gmm: DiagonalGmm
    mean_log_likelihood: float
    n_iter: int
    converged: bool


def _check_descriptors(x: np.ndarray, dim: int | None = None) -> None:
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        expected = f"[N, {dim}]" if dim is not None else "[N, D]"
        raise ValueError(f"descriptors has shape {x.shape}; expected {expected}")


def _posterior_batches(
    x: np.ndarray, gmm: DiagonalGmm, batch_size: int, dtype: ComputeDtype
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(features [B, 2D], posteriors [B, K], log p(x) [B])`` batch by batch; features are [x, x^2].

    Posteriors below ``tiny * K * e`` of ``dtype`` (about 1e-35 in float32) are raised to that value:
    subnormal numbers would slow the following matrix products many times over, and the change to any
    statistic is below float64 resolution.
    """
    log_floor = float(np.log(np.finfo(dtype).tiny) + np.log(gmm.n_components) + 1.0)
    precisions = 1.0 / gmm.variances
    linear = np.concatenate([(gmm.means * precisions).T, (-0.5 * precisions).T]).astype(dtype)  # [2D, K]
    constant = np.log(gmm.weights) - 0.5 * (
        np.sum(gmm.means**2 * precisions, axis=1)
        + np.sum(np.log(gmm.variances), axis=1)
        + gmm.dim * np.log(2.0 * np.pi)
    )
    constant = constant.astype(dtype)
    for start in range(0, len(x), batch_size):
        batch = np.asarray(x[start : start + batch_size], dtype=dtype)
        features = np.concatenate([batch, batch * batch], axis=1)
        log_density = features @ linear
        log_density += constant
        peak = log_density.max(axis=1, keepdims=True)
        log_density -= peak
        np.maximum(log_density, log_floor, out=log_density)
        posteriors = np.exp(log_density, out=log_density)
        total = posteriors.sum(axis=1, keepdims=True)
        posteriors /= total
        yield features, posteriors, (peak + np.log(total))[:, 0]


def gmm_statistics(
    x: np.ndarray,
    gmm: DiagonalGmm,
    *,
    batch_size: int = 32768,
    dtype: ComputeDtype = "float32",
    onto: GmmStatistics | None = None,
) -> GmmStatistics:
    """Posterior-weighted statistics of descriptors ``x`` ``[N, D]`` under ``gmm``, float64 sums.

    ``onto``: the statistics of earlier rows, which these sums continue. Rows given block by block, each
    block but the last a whole number of batches, give the sums of one pass over all of them bit for bit."""
    _check_descriptors(x, gmm.dim)
    k, d = gmm.n_components, gmm.dim
    if onto is None:
        zeroth = np.zeros(k)
        moments = np.zeros((k, 2 * d))
        log_likelihood = 0.0
    else:
        zeroth = onto.zeroth.copy()
        moments = np.concatenate([onto.first, onto.second], axis=1)
        log_likelihood = onto.log_likelihood
    for features, posteriors, log_norm in _posterior_batches(x, gmm, batch_size, dtype):
        zeroth += posteriors.sum(axis=0, dtype=np.float64)
        moments += posteriors.T @ features
        log_likelihood += float(log_norm.sum(dtype=np.float64))
    return GmmStatistics(zeroth, moments[:, :d], moments[:, d:], log_likelihood)


def mean_log_likelihood(
    x: np.ndarray, gmm: DiagonalGmm, *, batch_size: int = 32768, dtype: ComputeDtype = "float64"
) -> float:
    """Average log-density of descriptors ``x`` ``[N, D]`` under ``gmm`` (scikit-learn's ``score``)."""
    _check_descriptors(x, gmm.dim)
    total = 0.0
    for _, _, log_norm in _posterior_batches(x, gmm, batch_size, dtype):
        total += float(log_norm.sum(dtype=np.float64))
    return total / len(x)


def _maximise(
    zeroth: np.ndarray, first: np.ndarray, second: np.ndarray, reg_covar: float, variance_floor: np.ndarray
) -> DiagonalGmm:
    """M-step from posterior sums: weights, means and (floored) variances."""
    counts = zeroth + 10.0 * np.finfo(np.float64).eps
    means = first / counts[:, None]
    variances = second / counts[:, None] - means**2 + reg_covar
    variances = np.maximum(variances, variance_floor)
    return DiagonalGmm(counts / counts.sum(), means, variances)


def run_em(
    x: np.ndarray,
    initial: DiagonalGmm,
    *,
    max_iter: int,
    tol: float,
    reg_covar: float = 1e-6,
    variance_floor: np.ndarray | float = 0.0,
    batch_size: int = 32768,
    dtype: ComputeDtype = "float32",
) -> GmmFit:
    """EM from ``initial`` on descriptors ``x`` ``[N, D]``.

    Stops after ``max_iter`` iterations or when the mean log-likelihood (computed at each E-step, before
    that iteration's M-step, as scikit-learn does) changes by less than ``tol``. ``variance_floor`` is an
    absolute lower bound per dimension (``[D]`` or scalar).
    """
    _check_descriptors(x, initial.dim)
    floor = np.broadcast_to(np.asarray(variance_floor, dtype=np.float64), (initial.dim,))
    gmm = initial
    previous = -np.inf
    mean_ll = -np.inf
    for n_iter in range(1, max_iter + 1):
        stats = gmm_statistics(x, gmm, batch_size=batch_size, dtype=dtype)
        mean_ll = stats.log_likelihood / len(x)
        gmm = _maximise(stats.zeroth, stats.first, stats.second, reg_covar, floor)
        if abs(mean_ll - previous) < tol:
            return GmmFit(gmm, mean_ll, n_iter, True)
        previous = mean_ll
    return GmmFit(gmm, mean_ll, max_iter, False)


def _initial_gmm(x: np.ndarray, config: GmmConfig, seed: int, variance_floor: np.ndarray) -> DiagonalGmm:
    """Hard-assignment GMM from k-means (k-means++ seeds + ``init_kmeans_iter`` Lloyd iterations)."""
    labels = kmeans(x, config.n_components, seed=seed, max_iter=config.init_kmeans_iter).labels
    k, d = config.n_components, x.shape[1]
    moments = np.zeros((k, 2 * d))
    for start in range(0, len(x), config.batch_size):
        batch = x[start : start + config.batch_size]
        rows = np.arange(len(batch))
        one_hot = sparse.csr_matrix(
            (np.ones(len(batch), dtype=x.dtype), (labels[start : start + len(batch)], rows)),
            shape=(k, len(batch)),
        )
        moments += one_hot @ np.concatenate([batch, batch * batch], axis=1)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return _maximise(counts, moments[:, :d], moments[:, d:], config.reg_covar, variance_floor)


def _fit_once(x: np.ndarray, config: GmmConfig, init: int, variance_floor: np.ndarray) -> GmmFit:
    initial = _initial_gmm(x, config, config.seed + init, variance_floor)
    fit = run_em(
        x,
        initial,
        max_iter=config.max_iter,
        tol=config.tol,
        reg_covar=config.reg_covar,
        variance_floor=variance_floor,
        batch_size=config.batch_size,
        dtype=config.compute_dtype,
    )
    logger.info(
        "GMM init %d: %d iterations, converged %s, mean log-likelihood %.6f",
        init,
        fit.n_iter,
        fit.converged,
        fit.mean_log_likelihood,
    )
    return fit


def fit_gmm(x: np.ndarray, config: GmmConfig) -> GmmFit:
    """Fit a diagonal GMM to descriptors ``x`` ``[N, D]`` with ``config.n_init`` initialisations.

    The data are centred on their mean for the products (so that float32 keeps its precision) and the
    means shifted back; the fit with the highest final mean log-likelihood is returned.
    """
    _check_descriptors(x)
    if len(x) < config.n_components:
        raise ValueError(
            f"descriptors has {len(x)} rows; a GMM with {config.n_components} components needs more"
        )
    if not np.isfinite(x).all():
        raise ValueError("descriptors contains NaN or infinite values")
    work_dtype = np.dtype(config.compute_dtype)
    center = x.mean(axis=0, dtype=np.float64)
    centred = np.asarray(x, dtype=work_dtype) - center.astype(work_dtype)
    variance_floor = config.variance_floor * centred.var(axis=0).astype(np.float64)
    fits = [_fit_once(centred, config, init, variance_floor) for init in range(config.n_init)]
    best = max(fits, key=lambda fit: fit.mean_log_likelihood)
    shifted = DiagonalGmm(best.gmm.weights, best.gmm.means + center, best.gmm.variances)
    return GmmFit(shifted, best.mean_log_likelihood, best.n_iter, best.converged)
