"""Evaluation metrics of the papers, as pure functions on arrays, and the long-form metrics table.

Units: accuracies, recalls, few-shot accuracies, cluster purity and "% of supervised" are in percent (as the
papers report them); cluster NMI lies in [0, 1], cluster AMI in [-1, 1] (0: chance); ``gmacs`` is GMac per
clip (ptflops), ``params_m`` millions of parameters; seconds are wall-clock seconds measured on the machine
that ran the stage.

The metrics table (``metrics.parquet``) is long: one row per ``method, metric, value, split, seed``. Methods
are those of :mod:`motionfit.tasks.methods` (plus ``idt_clusters`` for the cluster quality); metric names are
``top1``, ``r@1`` ... ``r@50``, ``fewshot_1`` ... ``fewshot_all`` (and ``fewshot_<n>_std`` across probe
seeds), ``pct_sup_top1``, ``pseudo_label_acc``, ``cluster_nmi``, ``cluster_ami``, ``cluster_purity``,
``gmacs``, ``params_m``, ``flow_seconds_per_clip``, ``network_seconds_per_clip``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from motionfit.storage import tables
from motionfit.storage.layout import RunLayout

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("method", "metric", "value", "split", "seed")
METRIC_KEY = ("method", "metric", "split", "seed")
RETRIEVAL_KS = (1, 5, 10, 20, 50)
FEWSHOT_SHOTS: tuple[int | str, ...] = (1, 5, 10, 20, "all")


def _as_labels(name: str, labels: Any, length: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} has shape {labels.shape}; expected a 1-D array of class indices")
    if length is not None and labels.shape[0] != length:
        raise ValueError(f"{name} has {labels.shape[0]} entries; expected {length}")
    return labels


def _as_matrix(name: str, values: Any) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} has shape {values.shape}; expected [N, D]")
    return values


def video_top1(video_probs: Any, labels: Any) -> float:
    """Video-level top-1 accuracy in percent: ``video_probs`` ``[V, K]`` (clip softmax averaged per video),
    ``labels`` ``[V]`` int class indices."""
    video_probs = _as_matrix("video_probs", video_probs)
    labels = _as_labels("labels", labels, video_probs.shape[0])
    if labels.size == 0:
        raise ValueError("video_top1 needs at least one video")
    return float(100.0 * np.mean(video_probs.argmax(axis=1) == labels))


def confusion_matrix(predictions: Any, labels: Any, num_classes: int) -> np.ndarray:
    """``[K, K]`` int64 counts: row = true class, column = predicted class."""
    predictions = _as_labels("predictions", predictions).astype(np.int64)
    labels = _as_labels("labels", labels, predictions.shape[0]).astype(np.int64)
    for name, values in (("predictions", predictions), ("labels", labels)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}); got {values.min()}..{values.max()}")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def most_confused_pairs(confusion: Any, class_names: Sequence[str], top: int = 10) -> pd.DataFrame:
    """The class pairs most often confused in either direction (MSCL supplement, Table 2).

    ``confusion`` ``[K, K]`` counts (row = true class). For each unordered pair ``a < b`` the symmetric count
    is ``C[a, b] + C[b, a]``; returns the ``top`` pairs with a non-zero count, largest first (ties by class
    index), with columns ``class_a, class_b, a_as_b, b_as_a, confusions, rate`` where ``rate`` is the
    percentage of the two classes' test videos that were mistaken for the other.
    """
    confusion = np.asarray(confusion)
    n_classes = len(class_names)
    if confusion.shape != (n_classes, n_classes):
        raise ValueError(f"confusion has shape {confusion.shape}; expected ({n_classes}, {n_classes})")
    a, b = np.triu_indices(n_classes, k=1)
    a_as_b, b_as_a = confusion[a, b], confusion[b, a]
    symmetric = a_as_b + b_as_a
    support = confusion.sum(axis=1)
    order = np.lexsort((b, a, -symmetric))
    order = order[symmetric[order] > 0][:top]
    names = np.asarray(class_names, dtype=object)
    pair_support = (support[a] + support[b])[order]
    return pd.DataFrame(
        {
            "class_a": names[a[order]],
            "class_b": names[b[order]],
            "a_as_b": a_as_b[order].astype(np.int64),
            "b_as_a": b_as_a[order].astype(np.int64),
            "confusions": symmetric[order].astype(np.int64),
            "rate": 100.0 * symmetric[order] / np.maximum(pair_support, 1),
        }
    )


def _l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def cosine_neighbours(query_feats: Any, gallery_feats: Any, k: int, chunk_size: int = 1024) -> np.ndarray:
    """Indices ``[Q, min(k, G)] int64`` of each query's nearest gallery rows by cosine similarity, nearest
    first (ties keep gallery order); ``query_feats`` ``[Q, D]``, ``gallery_feats`` ``[G, D]`` float."""
    query = _l2_normalise(_as_matrix("query_feats", query_feats))
    gallery = _l2_normalise(_as_matrix("gallery_feats", gallery_feats))
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query_feats have {query.shape[1]} dims but gallery_feats have {gallery.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    depth = min(k, gallery.shape[0])
    chunks = [
        np.argsort(-(query[start : start + chunk_size] @ gallery.T), axis=1, kind="stable")[:, :depth]
        for start in range(0, query.shape[0], chunk_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, depth), dtype=np.int64)


def retrieval_recall_at_k(
    query_feats: Any,
    query_labels: Any,
    gallery_feats: Any,
    gallery_labels: Any,
    ks: Sequence[int] = RETRIEVAL_KS,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Nearest-neighbour video retrieval recall R@k in percent (the protocol of VCOP, MotionFit and CMPL).

    Test videos query training videos by cosine similarity of pooled conv5 features (the caller averages the
    features of 10 clips per video, :func:`~motionfit.tasks.data.clips.video_means`): a query is a hit at k
    when any of its k nearest gallery videos has the query's class. ``query_feats`` ``[Q, D]``,
    ``gallery_feats`` ``[G, D]`` float, labels int ``[Q]``/``[G]``. A k above G counts the whole gallery. Ties
    in similarity keep gallery order.
    """
    query = _as_matrix("query_feats", query_feats)
    gallery = _as_matrix("gallery_feats", gallery_feats)
    query_labels = _as_labels("query_labels", query_labels, query.shape[0])
    gallery_labels = _as_labels("gallery_labels", gallery_labels, gallery.shape[0])
    if query.shape[0] == 0 or gallery.shape[0] == 0:
        raise ValueError("retrieval needs at least one query and one gallery video")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    depth = min(max(ks), gallery.shape[0])
    neighbours = cosine_neighbours(query, gallery, depth, chunk_size)
    hits = gallery_labels[neighbours] == query_labels[:, None]
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), depth)
    return {int(k): float(100.0 * np.mean(first_hit < min(k, depth))) for k in ks}


def _balanced_sample(labels: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``shots`` random examples per class (all of a class that has fewer), sorted."""
    keys = rng.random(labels.size)
    order = np.lexsort((keys, labels))
    sorted_labels = labels[order]
    class_start = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class = np.arange(labels.size) - class_start
    return np.sort(order[rank_in_class < shots])


def linear_probe_fewshot(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    shots: Sequence[int | str] = FEWSHOT_SHOTS,
    seeds: Sequence[int] = (0, 1, 2),
    regularisation_c: float = 1.0,
    max_iter: int = 1000,
) -> pd.DataFrame:
    """Few-shot linear probe on frozen features: test top-1 in percent, mean and std over seeds.

    Features (``[N, D]`` float, pooled conv5) are L2-normalised; for each seed a class-balanced sample of
    ``n`` training videos per class (all of a class with fewer) trains a multinomial logistic regression
    (lbfgs, inverse regularisation ``regularisation_c``); ``"all"`` uses the whole training set once (lbfgs is
    deterministic). Returns columns ``shots`` (str), ``mean``, ``std`` (population std over seeds),
    ``n_seeds``, ``n_train``.
    """
    train = _l2_normalise(_as_matrix("train_feats", train_feats))
    test = _l2_normalise(_as_matrix("test_feats", test_feats))
    train_labels = _as_labels("train_labels", train_labels, train.shape[0])
    test_labels = _as_labels("test_labels", test_labels, test.shape[0])
    if np.unique(train_labels).size < 2:
        raise ValueError("train_labels must hold at least two classes for a linear probe")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    rows = []
    for shot in shots:
        if shot != "all" and (not isinstance(shot, int | np.integer) or shot < 1):
            raise ValueError(f"shots entries must be positive integers or 'all', got {shot!r}")
        accuracies, n_train = [], 0
        for seed in seeds if shot != "all" else seeds[:1]:
            index = (
                np.arange(train.shape[0])
                if shot == "all"
                else _balanced_sample(train_labels, int(shot), np.random.default_rng(seed))
            )
            probe = LogisticRegression(C=regularisation_c, solver="lbfgs", max_iter=max_iter)
            probe.fit(train[index], train_labels[index])
            accuracies.append(100.0 * float(np.mean(probe.predict(test) == test_labels)))
            n_train = index.size
        rows.append(
            {
                "shots": str(shot),
                "mean": float(np.mean(accuracies)),
                "std": float(np.std(accuracies)),
                "n_seeds": len(accuracies),
                "n_train": n_train,
            }
        )
    return pd.DataFrame(rows)


def percent_of_supervised_frame(
    metrics: pd.DataFrame, metric: str = "top1", supervised_method: str = "supervised"
) -> pd.DataFrame:
    """Rows ``pct_sup_<metric>`` for every other method's ``metric`` row, relative to the supervised method's
    ``metric`` on the same split (its mean over seeds); empty when the supervised method has no such row."""
    rows = metrics[metrics["metric"] == metric]
    reference = rows[rows["method"] == supervised_method].groupby("split")["value"].mean()
    rows = rows[(rows["method"] != supervised_method) & rows["split"].isin(reference.index[reference > 0])]
    derived = rows.assign(
        metric=f"pct_sup_{metric}", value=100.0 * rows["value"] / rows["split"].map(reference).to_numpy()
    )
    return metrics_frame(derived.to_dict("records"))


@dataclass(frozen=True)
class InferenceCost:
    """What one clip costs at inference: the network's GMac (ptflops) and parameters (millions), its measured
    forward seconds when known (``features.forward_seconds_per_clip``), and for a flow network the measured
    seconds to compute its TV-L1 input."""

    method: str
    gmacs: float
    params_m: float
    flow_seconds_per_clip: float = 0.0
    network_seconds_per_clip: float | None = None

    def records(self, split: str = "test", seed: int = 0) -> list[dict[str, Any]]:
        """Metric records ``gmacs``, ``params_m``, ``flow_seconds_per_clip`` and, when measured,
        ``network_seconds_per_clip`` for the metrics table."""
        values = {
            "gmacs": self.gmacs,
            "params_m": self.params_m,
            "flow_seconds_per_clip": self.flow_seconds_per_clip,
        }
        if self.network_seconds_per_clip is not None:
            values["network_seconds_per_clip"] = self.network_seconds_per_clip
        return [
            {"method": self.method, "metric": name, "value": value, "split": split, "seed": seed}
            for name, value in values.items()
        ]


def teacher_inference_cost(
    teacher_gmacs: float,
    teacher_params: float,
    flow_seconds_per_pair: float,
    frames_per_clip: int = 16,
    network_seconds_per_clip: float | None = None,
    method: str = "teacher",
) -> InferenceCost:
    """Cost of the flow teacher on one clip: the network (``teacher_gmacs`` GMac, ``teacher_params``
    parameters) plus TV-L1 on ``frames_per_clip`` frame pairs (a clip of T flow fields needs T pairs) at the
    measured ``flow_seconds_per_pair``.

    TV-L1 is reported in seconds, not FLOPs: OpenCV's solver stops each scale and warp on a convergence test,
    so its operation count depends on the content and cannot be stated honestly as one figure.
    """
    if flow_seconds_per_pair < 0 or frames_per_clip < 1:
        raise ValueError(
            f"flow_seconds_per_pair must be >= 0 and frames_per_clip >= 1, got {flow_seconds_per_pair}, "
            f"{frames_per_clip}"
        )
    return InferenceCost(
        method=method,
        gmacs=float(teacher_gmacs),
        params_m=float(teacher_params) / 1e6,
        flow_seconds_per_clip=float(flow_seconds_per_pair) * frames_per_clip,
        network_seconds_per_clip=network_seconds_per_clip,
    )


def student_inference_cost(
    student_gmacs: float,
    student_params: float,
    network_seconds_per_clip: float | None = None,
    method: str = "motionfit",
) -> InferenceCost:
    """Cost of the RGB student on one clip: its network alone (no flow at inference)."""
    return InferenceCost(
        method=method,
        gmacs=float(student_gmacs),
        params_m=float(student_params) / 1e6,
        network_seconds_per_clip=network_seconds_per_clip,
    )


def metrics_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The long metrics table from records with ``method``, ``metric``, ``value`` and optional ``split``
    (default ``"test"``) and ``seed`` (default 0)."""
    rows = []
    for record in records:
        missing = {"method", "metric", "value"} - set(record)
        if missing:
            raise ValueError(f"metric record {dict(record)} lacks {sorted(missing)}")
        rows.append(
            {
                "method": str(record["method"]),
                "metric": str(record["metric"]),
                "value": float(record["value"]),
                "split": str(record.get("split", "test")),
                "seed": int(record.get("seed", 0)),
            }
        )
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    return frame.astype({"method": str, "metric": str, "value": np.float64, "split": str, "seed": np.int64})


def fewshot_records(
    summary: pd.DataFrame, method: str, split: str = "test", seed: int = 0
) -> list[dict[str, Any]]:
    """Records ``fewshot_<shots>`` (mean) and ``fewshot_<shots>_std`` from :func:`linear_probe_fewshot`."""
    records = []
    for row in summary.itertuples(index=False):
        for metric, value in ((f"fewshot_{row.shots}", row.mean), (f"fewshot_{row.shots}_std", row.std)):
            records.append({"method": method, "metric": metric, "value": value, "split": split, "seed": seed})
    return records


def read_metrics(layout: RunLayout) -> pd.DataFrame:
    """The run's metrics table; empty (with the right columns) when none has been written yet."""
    if not tables.table_exists(layout.metrics):
        return metrics_frame([])
    return tables.read_table(layout.metrics)


def append_metrics(layout: RunLayout, new: pd.DataFrame) -> pd.DataFrame:
    """Merge ``new`` into ``metrics.parquet``: rows with the same method, metric, split and seed are replaced.

    Returns the merged table (sorted by method, metric, split, seed).
    """
    missing = set(METRIC_COLUMNS) - set(new.columns)
    if missing:
        raise ValueError(f"metrics frame lacks columns {sorted(missing)}; expected {list(METRIC_COLUMNS)}")
    merged = pd.concat([read_metrics(layout), metrics_frame(new.to_dict("records"))], ignore_index=True)
    merged = merged.drop_duplicates(subset=list(METRIC_KEY), keep="last")
    merged = merged.sort_values(list(METRIC_KEY), kind="stable").reset_index(drop=True)
    tables.write_table(layout.metrics, merged)
    logger.debug("metrics table %s now holds %d rows", layout.metrics, len(merged))
    return merged
