"""PCA of IDT descriptors before the GMM (Wang & Schmid 2013: half the dimensions; the IDT-prior authors'
code: 90 % of the variance), from a float64 covariance accumulated batch by batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from motionfit.tasks.prior.config import ComputeDtype


@dataclass(frozen=True)
class PcaProjection:
    """PCA: ``mean`` ``[D]``, ``components`` ``[d, D]`` by decreasing ``explained_variance`` ``[d]``."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray

    def transform(self, x: np.ndarray, dtype: ComputeDtype = "float32") -> np.ndarray:
        """Project ``x`` ``[N, D]`` to ``[N, d]`` in ``dtype``."""
        return (np.asarray(x, dtype=dtype) - self.mean.astype(dtype)) @ self.components.T.astype(dtype)


def fit_pca(
    x: np.ndarray,
    *,
    reduction: Literal["variance", "dim_fraction"] = "variance",
    variance_kept: float = 0.9,
    dim_fraction: float = 0.5,
    batch_size: int = 65536,
) -> PcaProjection:
    """PCA of ``x`` ``[M, D]`` from its float64 covariance (accumulated batch by batch).

    Keeps the fewest leading components explaining ``variance_kept`` of the variance, or
    ``round(dim_fraction * D)`` of them; each component's sign makes its largest entry positive.
    """
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"PCA input has shape {x.shape}; expected [M, D] with M >= 2")
    mean = x.mean(axis=0, dtype=np.float64)
    scatter = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, len(x), batch_size):
        centred = np.asarray(x[start : start + batch_size], dtype=np.float64) - mean
        scatter += centred.T @ centred
    eigenvalues, eigenvectors = np.linalg.eigh(scatter / (len(x) - 1))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.maximum(eigenvalues[order], 0.0)
    components = eigenvectors[:, order].T
    if reduction == "variance":
        total = eigenvalues.sum()
        ratio = np.cumsum(eigenvalues) / total if total > 0 else np.ones_like(eigenvalues)
        n_kept = int(np.searchsorted(ratio, variance_kept - 1e-12) + 1)
    else:
        n_kept = max(1, round(dim_fraction * x.shape[1]))
    n_kept = min(n_kept, x.shape[1])
    components = components[:n_kept]
    signs = np.sign(components[np.arange(n_kept), np.abs(components).argmax(axis=1)])
    return PcaProjection(mean, components * signs[:, None], eigenvalues[:n_kept])
