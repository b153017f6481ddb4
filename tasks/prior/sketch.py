"""Count sketch (Charikar et al. 2002): a seeded random projection of long vectors to few dimensions.

Each input dimension ``i`` gets a bucket ``h(i)`` in ``[0, sketch_dim)`` and a sign ``s(i)`` in ``{-1, +1}``;
the sketch is ``y = sum_i s(i) x_i e_{h(i)}``. Inner products are preserved in expectation over the hash
functions, which is why the IDT-prior paper compresses its Fisher vectors this way (to 2000 dimensions)
before k-means. The projection is applied as a sparse matrix with one non-zero per input dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse


@dataclass(frozen=True)
class CountSketch:
    """The hash functions of one count sketch.

    ``buckets`` is ``[input_dim] int64`` in ``[0, sketch_dim)``, ``signs`` is ``[input_dim] int8`` in
    ``{-1, +1}``; both are drawn from ``seed`` by :func:`make_count_sketch` and stored with a fitted model,
    so a sketch read back from disk does not depend on numpy's random streams staying the same.
    """

    input_dim: int
    sketch_dim: int
    seed: int
    buckets: np.ndarray
    signs: np.ndarray

    def __post_init__(self) -> None:
        if self.buckets.shape != (self.input_dim,) or self.signs.shape != (self.input_dim,):
            raise ValueError(
                f"count sketch buckets {self.buckets.shape} and signs {self.signs.shape} must both "
                f"have shape ({self.input_dim},)"
            )
        if self.input_dim and (self.buckets.min() < 0 or self.buckets.max() >= self.sketch_dim):
            raise ValueError(f"count sketch buckets must lie in [0, {self.sketch_dim})")
        if not np.all(np.abs(self.signs) == 1):
            raise ValueError("count sketch signs must be -1 or +1")

    def projection(self) -> sparse.csr_matrix:
        """The sketch as a sparse ``[input_dim, sketch_dim]`` float32 matrix with one entry per row."""
        return sparse.csr_matrix(
            (self.signs.astype(np.float32), (np.arange(self.input_dim), self.buckets)),
            shape=(self.input_dim, self.sketch_dim),
        )


def make_count_sketch(input_dim: int, sketch_dim: int = 2000, seed: int = 0) -> CountSketch:
    """Draw the bucket and sign of each of ``input_dim`` dimensions from ``seed`` (2000 dims in the paper)."""
    if input_dim < 1 or sketch_dim < 1:
        raise ValueError(
            f"count sketch needs input_dim >= 1 and sketch_dim >= 1, got {input_dim}, {sketch_dim}"
        )
    rng = np.random.default_rng(seed)
    buckets = rng.integers(0, sketch_dim, size=input_dim, dtype=np.int64)
    signs = (2 * rng.integers(0, 2, size=input_dim, dtype=np.int8) - 1).astype(np.int8)
    return CountSketch(input_dim, sketch_dim, seed, buckets, signs)


def count_sketch(vectors: np.ndarray, sketch: CountSketch) -> np.ndarray:
    """Sketch ``vectors`` ``[V, input_dim]`` (or ``[input_dim]``) to ``[V, sketch_dim]`` float32."""
    vectors = np.asarray(vectors)
    if vectors.ndim not in (1, 2) or vectors.shape[-1] != sketch.input_dim:
        raise ValueError(
            f"vectors has shape {vectors.shape}; expected [V, {sketch.input_dim}] or [{sketch.input_dim}]"
        )
    batch = np.atleast_2d(vectors).astype(np.float32, copy=False)
    sketched = np.asarray(batch @ sketch.projection(), dtype=np.float32)
    return sketched[0] if vectors.ndim == 1 else sketched
