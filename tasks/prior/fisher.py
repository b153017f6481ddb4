"""Fisher vectors of Improved Dense Trajectory descriptors, count-sketched (IDT-prior paper, Sec. 3.3).

Pipeline (Tokmakov, Hebert, Schmid; following Wang & Schmid 2013 and Perronnin et al. 2010):

1. PCA per descriptor type (trajectory shape, HOG, HOF, MBH), keeping 90 % of the variance (or a fixed
   fraction of the dimensions), fitted on a seeded random sample of 3500 videos x 500 descriptors;
   ``pca_scope="joint"`` fits one PCA over all selected columns together, as the authors' public code does.
2. One diagonal GMM with 256 components per PCA block (Wang & Schmid encode each descriptor type with its
   own vocabulary and normalise each type's Fisher vector separately before concatenating).
3. Per video and block, Eq. 5-6 of the IDT-prior paper (the improved Fisher vector):
   ``G_mu_k = 1/(N sqrt(w_k)) sum_n q_nk (x_n - mu_k) / sigma_k`` and
   ``G_sigma_k = 1/(N sqrt(2 w_k)) sum_n q_nk [((x_n - mu_k) / sigma_k)^2 - 1]``; layout per block: all
   first-order terms ``[K, d]`` then all second-order terms ``[K, d]``, flattened. Then power normalisation
   ``sign(z)|z|^alpha`` and L2 normalisation per block; the concatenation of B blocks is divided by sqrt(B)
   so that the whole vector has unit norm. ``encoding="authors_code_unnormalised"`` computes instead the
   variant in the authors' public code: ``1/N sum q (x - mu)`` and ``1/N sum q (sigma^2 - (x - mu)^2)``.
4. Count sketch of the whole vector to 2000 dimensions with a fixed seed
   (:mod:`motionfit.tasks.prior.sketch`).

A video without trajectories (``N = 0``) gets an all-zero Fisher vector and sketch: it has no evidence for
any component, and zeros keep NaN out of the clustering.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import fsspec
import numpy as np

from motionfit.tasks.idt.columns import REFERENCE_COLUMNS, IdtColumns
from motionfit.tasks.prior.config import ComputeDtype, Encoding, FisherConfig
from motionfit.tasks.prior.gmm import DiagonalGmm, GmmStatistics, fit_gmm, gmm_statistics
from motionfit.tasks.prior.pca import PcaProjection, fit_pca
from motionfit.tasks.prior.sketch import CountSketch, count_sketch, make_count_sketch

logger = logging.getLogger(__name__)

CODE_VERSION = 1
"""Version of the Fisher-vector fit and encoding (the fv_fit and fv_encode stages), part of their cache keys:
bump it when a change alters the model or the vectors, and the next run recomputes both and the clusters."""

MODEL_FORMAT_VERSION = 2
"""Version 2 stores the IDT row layout; version 1 files hold models of the reference's 436 columns."""


@dataclass(frozen=True)
class FisherBlock:
    """One encoded group of IDT columns: ``columns`` ``[D] int64`` into an IDT row, its PCA and GMM."""

    name: str
    columns: np.ndarray
    pca: PcaProjection
    gmm: DiagonalGmm

    @property
    def fisher_dim(self) -> int:
        return 2 * self.gmm.n_components * self.gmm.dim


@dataclass(frozen=True)
class FisherModel:
    """Everything needed to encode a video: its config, the IDT row layout it reads, the PCA + GMM blocks
    and the count sketch."""

    config: FisherConfig
    idt_columns: IdtColumns
    blocks: tuple[FisherBlock, ...]
    sketch: CountSketch

    def __post_init__(self) -> None:
        if self.sketch.input_dim != self.fisher_dim:
            raise ValueError(
                f"count sketch takes {self.sketch.input_dim} dims but the blocks' Fisher vector has "
                f"{self.fisher_dim}"
            )

    @property
    def fisher_dim(self) -> int:
        return sum(block.fisher_dim for block in self.blocks)


def block_columns(config: FisherConfig, idt_columns: IdtColumns) -> dict[str, np.ndarray]:
    """IDT column indices ``[D] int64`` of each block: one per descriptor type, or one joint block."""
    ranges = idt_columns.ranges()
    per_type = {name: np.arange(*ranges[name]) for name in config.descriptor_types}
    if config.pca_scope == "joint":
        return {"joint": np.concatenate(list(per_type.values()))}
    return per_type


def sample_descriptors(
    arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    config: FisherConfig,
    rng: np.random.Generator,
    idt_columns: IdtColumns = REFERENCE_COLUMNS,
) -> dict[str, np.ndarray] | list[np.ndarray]:
    """Random sample for fitting: ``n_sample_videos`` videos x up to ``descriptors_per_video`` rows each.

    ``arrays`` maps video ids to ``[N, D]`` IDT arrays (``D = idt_columns.row_dim``, 436 by default; numpy
    or lazily read zarr arrays: only the chosen rows of the chosen videos are read), or is a list of them.
    Returns the same kind of container holding the chosen videos' sampled rows as ``[n, D] float32`` (rows
    in their original order). Videos with fewer rows contribute all of them.
    """
    row_dim = idt_columns.row_dim
    keys = list(arrays.keys()) if isinstance(arrays, Mapping) else list(range(len(arrays)))
    n_videos = min(config.n_sample_videos, len(keys))
    chosen = np.sort(rng.choice(len(keys), size=n_videos, replace=False))
    sampled: dict[str, np.ndarray] = {}
    for index in chosen:
        key = keys[index]
        array = arrays[key]
        if len(array.shape) != 2 or array.shape[1] != row_dim:
            raise ValueError(f"IDT array of video {key!r} has shape {array.shape}; expected [N, {row_dim}]")
        n_rows = array.shape[0]
        if n_rows <= config.descriptors_per_video:
            rows = np.asarray(array[:], dtype=np.float32)
        else:
            picked = np.sort(rng.choice(n_rows, size=config.descriptors_per_video, replace=False))
            rows = np.asarray(array[picked], dtype=np.float32)
        sampled[key] = rows
    return sampled if isinstance(arrays, Mapping) else list(sampled.values())


def fit_fisher_model(
    sample: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    config: FisherConfig,
    idt_columns: IdtColumns = REFERENCE_COLUMNS,
) -> FisherModel:
    """Fit PCA and GMM per block on a sample of IDT arrays and draw the count sketch.

    ``sample`` holds ``[N, D]`` IDT arrays per video laid out as ``idt_columns`` says (all of them or the
    output of :func:`sample_descriptors`): at most ``n_sample_videos`` x ``descriptors_per_video`` rows are
    drawn from it with ``config.sample_seed`` (a no-op on an already sampled set).
    """
    per_video = sample_descriptors(sample, config, np.random.default_rng(config.sample_seed), idt_columns)
    arrays = list(per_video.values()) if isinstance(per_video, dict) else per_video
    if not arrays:
        raise ValueError(f"sample holds no videos; expected IDT arrays [N, {idt_columns.row_dim}]")
    descriptors = np.concatenate(arrays)
    if len(descriptors) < config.gmm.n_components:
        raise ValueError(
            f"sample holds {len(descriptors)} descriptors; a GMM with {config.gmm.n_components} components "
            "needs at least as many"
        )
    if not np.isfinite(descriptors).all():
        raise ValueError("sample contains NaN or infinite descriptors")
    logger.info("fitting Fisher model on %d descriptors from %d videos", len(descriptors), len(arrays))
    blocks = []
    for name, columns in block_columns(config, idt_columns).items():
        block_descriptors = descriptors[:, columns]
        pca = fit_pca(
            block_descriptors,
            reduction=config.pca_reduction,
            variance_kept=config.pca_variance_kept,
            dim_fraction=config.pca_dim_fraction,
        )
        projected = pca.transform(block_descriptors, config.gmm.compute_dtype)
        fit = fit_gmm(projected, config.gmm)
        logger.info(
            "block %s: PCA %d -> %d dims, GMM %d components, %d EM iterations, log-likelihood %.4f",
            name,
            len(columns),
            len(pca.components),
            fit.gmm.n_components,
            fit.n_iter,
            fit.mean_log_likelihood,
        )
        blocks.append(FisherBlock(name, columns, pca, fit.gmm))
    fisher_dim = sum(block.fisher_dim for block in blocks)
    sketch = make_count_sketch(fisher_dim, config.sketch_dim, config.sketch_seed)
    return FisherModel(config, idt_columns, tuple(blocks), sketch)


def fisher_encode(
    x: np.ndarray,
    gmm: DiagonalGmm,
    *,
    encoding: Encoding = "paper_eq5_6",
    batch_size: int = 32768,
    dtype: ComputeDtype = "float32",
) -> np.ndarray:
    """Unnormalised Fisher vector ``[2 K d] float64`` of descriptors ``x`` ``[N, d]`` under ``gmm``.

    ``paper_eq5_6``: first order ``(S1 - S0 mu) / (N sqrt(w) sigma)`` and second order
    ``((S2 - 2 mu S1 + S0 mu^2) / sigma^2 - S0) / (N sqrt(2 w))`` with the posterior sums ``S0 = sum q``,
    ``S1 = sum q x``, ``S2 = sum q x^2`` (Eq. 5-6 expanded). ``authors_code_unnormalised``:
    ``(S1 - S0 mu) / N`` and ``(S0 sigma^2 - (S2 - 2 mu S1 + S0 mu^2)) / N``. Zeros for ``N = 0``.
    """
    if x.ndim != 2 or x.shape[1] != gmm.dim:
        raise ValueError(f"descriptors has shape {x.shape}; expected [N, {gmm.dim}] for this GMM")
    if len(x) == 0:
        return np.zeros(2 * gmm.n_components * gmm.dim)
    stats = gmm_statistics(x, gmm, batch_size=batch_size, dtype=dtype)
    return fisher_from_statistics(stats, len(x), gmm, encoding)


def fisher_from_statistics(
    stats: GmmStatistics, n_descriptors: int, gmm: DiagonalGmm, encoding: Encoding = "paper_eq5_6"
) -> np.ndarray:
    """The unnormalised Fisher vector of :func:`fisher_encode` from the posterior sums of its
    ``n_descriptors`` (at least one) descriptors."""
    s0 = stats.zeroth[:, None]
    centred_first = stats.first - s0 * gmm.means  # sum q (x - mu)
    centred_second = stats.second - 2.0 * gmm.means * stats.first + s0 * gmm.means**2  # sum q (x - mu)^2
    if encoding == "paper_eq5_6":
        sqrt_weights = np.sqrt(gmm.weights)[:, None]
        first_order = centred_first / (n_descriptors * sqrt_weights * np.sqrt(gmm.variances))
        second_order = (centred_second / gmm.variances - s0) / (n_descriptors * np.sqrt(2.0) * sqrt_weights)
    else:
        first_order = centred_first / n_descriptors
        second_order = (s0 * gmm.variances - centred_second) / n_descriptors
    return np.concatenate([first_order.ravel(), second_order.ravel()])


def power_l2_normalise(vector: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``sign(z)|z|^alpha`` then division by the L2 norm (Perronnin et al. 2010); a zero vector stays zero."""
    powered = np.sign(vector) * np.abs(vector) ** alpha
    norm = np.linalg.norm(powered)
    return powered / norm if norm > 0 else powered


def fisher_vector(descriptors: np.ndarray | Iterable[np.ndarray], model: FisherModel) -> np.ndarray:
    """Normalised Fisher vector ``[model.fisher_dim] float32`` of one video's IDT rows ``[N, D]`` (``D``:
    ``model.idt_columns.row_dim``, 436 with the reference's parameters), whole or as consecutive blocks of
    rows, so a long video is encoded without holding its trajectories: the posterior sums continue from
    block to block, and only the float32 products of a block round otherwise than the whole array's
    (up to a few 1e-6 in the vector, however the blocks are cut).

    Blocks are encoded and power/L2-normalised separately, then concatenated and divided by sqrt(#blocks).
    """
    row_blocks = (descriptors,) if isinstance(descriptors, np.ndarray) else descriptors
    gmm_config = model.config.gmm
    statistics: list[GmmStatistics | None] = [None] * len(model.blocks)
    n_descriptors = 0
    for rows in row_blocks:
        rows = _checked_rows(rows, model.idt_columns.row_dim)
        if len(rows) == 0:
            continue
        n_descriptors += len(rows)
        for index, block in enumerate(model.blocks):
            projected = block.pca.transform(np.take(rows, block.columns, axis=1), gmm_config.compute_dtype)
            statistics[index] = gmm_statistics(
                projected,
                block.gmm,
                batch_size=gmm_config.batch_size,
                dtype=gmm_config.compute_dtype,
                onto=statistics[index],
            )
    parts = []
    for block, stats in zip(model.blocks, statistics, strict=True):
        raw = (
            np.zeros(block.fisher_dim)
            if stats is None
            else fisher_from_statistics(stats, n_descriptors, block.gmm, model.config.encoding)
        )
        parts.append(power_l2_normalise(raw, model.config.power_alpha))
    return (np.concatenate(parts) / np.sqrt(len(parts))).astype(np.float32)


def _checked_rows(rows: np.ndarray, row_dim: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != row_dim:
        raise ValueError(f"descriptors has shape {rows.shape}; expected [N, {row_dim}] IDT rows")
    if not np.isfinite(rows).all():
        raise ValueError("descriptors contains NaN or infinite values")
    return rows


def encode_video(descriptors: np.ndarray | Iterable[np.ndarray], model: FisherModel) -> np.ndarray:
    """Count-sketched Fisher vector ``[sketch_dim] float32`` of one video's IDT rows ``[N, D]``, whole or
    in blocks (:func:`fisher_vector`)."""
    return count_sketch(fisher_vector(descriptors, model), model.sketch)


def save_fisher_model(model: FisherModel, file: str | os.PathLike[str] | BinaryIO) -> None:
    """Write ``model`` as one npz (no pickles) to a local path, an fsspec URL or a binary file object."""
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(MODEL_FORMAT_VERSION),
        "config_json": np.array(model.config.model_dump_json()),
        "idt_track_length": np.array(model.idt_columns.track_length),
        "idt_type_dims": np.array(model.idt_columns.type_dims),
        "block_names": np.array([block.name for block in model.blocks]),
        "sketch_dim": np.array(model.sketch.sketch_dim),
        "sketch_seed": np.array(model.sketch.seed),
        "sketch_buckets": model.sketch.buckets,
        "sketch_signs": model.sketch.signs,
    }
    for index, block in enumerate(model.blocks):
        arrays |= {
            f"block{index}_columns": block.columns,
            f"block{index}_pca_mean": block.pca.mean,
            f"block{index}_pca_components": block.pca.components,
            f"block{index}_pca_explained_variance": block.pca.explained_variance,
            f"block{index}_gmm_weights": block.gmm.weights,
            f"block{index}_gmm_means": block.gmm.means,
            f"block{index}_gmm_variances": block.gmm.variances,
        }
    if isinstance(file, str | os.PathLike):
        with fsspec.open(os.fspath(file), "wb") as handle:
            np.savez(handle, **arrays)
    else:
        np.savez(file, **arrays)


def load_fisher_model(file: str | os.PathLike[str] | BinaryIO) -> FisherModel:
    """Read a model written by :func:`save_fisher_model` (local path, fsspec URL or binary file object)."""
    if isinstance(file, str | os.PathLike):
        with fsspec.open(os.fspath(file), "rb") as handle:
            return _model_from_npz(np.load(handle, allow_pickle=False))
    return _model_from_npz(np.load(file, allow_pickle=False))


def _model_from_npz(npz: np.lib.npyio.NpzFile) -> FisherModel:
    with npz:
        version = int(npz["format_version"])
        if version not in (1, MODEL_FORMAT_VERSION):
            raise ValueError(
                f"Fisher model file has format version {version}; expected 1 or {MODEL_FORMAT_VERSION}"
            )
        config = FisherConfig.model_validate_json(str(npz["config_json"]))
        idt_columns = REFERENCE_COLUMNS
        if version >= 2:
            hog, hof, mbhx, mbhy = (int(dim) for dim in npz["idt_type_dims"])
            idt_columns = IdtColumns(int(npz["idt_track_length"]), (hog, hof, mbhx, mbhy))
        blocks = []
        for index, name in enumerate(npz["block_names"]):
            pca = PcaProjection(
                npz[f"block{index}_pca_mean"],
                npz[f"block{index}_pca_components"],
                npz[f"block{index}_pca_explained_variance"],
            )
            gmm = DiagonalGmm(
                npz[f"block{index}_gmm_weights"],
                npz[f"block{index}_gmm_means"],
                npz[f"block{index}_gmm_variances"],
            )
            blocks.append(FisherBlock(str(name), npz[f"block{index}_columns"], pca, gmm))
        buckets = npz["sketch_buckets"]
        sketch = CountSketch(
            len(buckets), int(npz["sketch_dim"]), int(npz["sketch_seed"]), buckets, npz["sketch_signs"]
        )
    return FisherModel(config, idt_columns, tuple(blocks), sketch)
