"""PNG figures of a run (``<run_root>/plots``): training curves, confusion matrix, retrieval and cluster
examples as frame strips, Grad-CAM overlays.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state, safe in worker threads) at a
fixed size and ``DPI``, and written atomically through fsspec; every function returns the PNG's URL.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from motionfit.storage import fs
from motionfit.tasks.evaluation.gradcam import GradCam, overlay_heatmap

DPI = 100
STRIP_WIDTH_IN = 3.2
"""Width in inches of one cell holding a frame strip."""
STRIP_HEIGHT_IN = 1.1
"""Height in inches of one row of frame strips (title included)."""


class FrameSource(Protocol):
    """Per-video frames ``[T, H, W, 3] uint8``, as ``RunLayout.store("frames")`` provides them."""

    def shape(self, video_id: str) -> tuple[int, ...]: ...

    def read_range(self, video_id: str, start: int, stop: int) -> np.ndarray: ...


def save_figure(figure: Figure, url: str) -> str:
    """Render ``figure`` as PNG at :data:`DPI` and write it atomically to ``url`` (path or fsspec URL)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    fs.write_bytes_atomic(url, buffer.getvalue())
    return url


def _figure(width_in: float, height_in: float) -> Figure:
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _show_image(axes: Axes, image: np.ndarray, title: str, colour: str = "black") -> None:
    axes.imshow(image)
    axes.set_title(title, fontsize=7, color=colour)
    axes.set_xticks([])
    axes.set_yticks([])


def evenly_spaced(n_items: int, n_picks: int) -> np.ndarray:
    """``min(n_picks, n_items)`` indices spread evenly over ``range(n_items)``, first and last included."""
    if n_items < 1 or n_picks < 1:
        raise ValueError(f"need n_items >= 1 and n_picks >= 1, got {n_items}, {n_picks}")
    return np.unique(np.rint(np.linspace(0, n_items - 1, min(n_picks, n_items))).astype(np.int64))


def frame_strip(frames: np.ndarray, n_frames: int = 4) -> np.ndarray:
    """``n_frames`` evenly spaced frames of ``frames`` ``[T, H, W, 3] uint8`` side by side: ``[H, n*W, 3]``.

    Frames must share one size.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames has shape {frames.shape}; expected [T, H, W, 3]")
    picked = frames[evenly_spaced(frames.shape[0], n_frames)]
    return np.concatenate(list(picked), axis=1)


def stored_frame_strip(store: FrameSource, video_id: str, n_frames: int = 4) -> np.ndarray:
    """A :func:`frame_strip` of a stored video, reading only the picked frames."""
    indices = evenly_spaced(store.shape(video_id)[0], n_frames)
    frames = np.concatenate([store.read_range(video_id, int(i), int(i) + 1) for i in indices])
    return frame_strip(frames, n_frames)


def plot_training_curves(histories: Mapping[str, pd.DataFrame], url: str) -> str:
    """Loss and accuracy per epoch of each training stage.

    ``histories`` maps a stage name (``teacher``, ``student``, ``finetune``, ...) to its per-epoch table with
    an ``epoch`` column; every column whose name contains ``loss`` goes to the left panel, every accuracy (a
    name containing ``top1`` or ``acc``, in percent) to the right one. The figure is 1000 x 400 pixels.
    """
    figure = _figure(10.0, 4.0)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for stage, history in histories.items():
        if "epoch" not in history.columns:
            raise ValueError(
                f"history of stage {stage!r} has columns {list(history.columns)}; expected 'epoch'"
            )
        for column in history.columns:
            is_accuracy = "top1" in column or "acc" in column
            target = loss_axes if "loss" in column else accuracy_axes if is_accuracy else None
            if target is not None:
                style = "--" if column.startswith("val") else "-"
                target.plot(history["epoch"], history[column], style, marker=".", label=f"{stage} {column}")
    for axes, ylabel in ((loss_axes, "loss"), (accuracy_axes, "accuracy (%)")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=7)
    return save_figure(figure, url)


def confusion_figure_inches(num_classes: int) -> float:
    """Side of the square confusion-matrix figure: 5 inches up to 10 classes, growing 0.3 inch per class."""
    return max(5.0, 2.0 + 0.3 * num_classes)


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], url: str) -> str:
    """Row-normalised confusion matrix (percent of each true class) of ``confusion`` ``[K, K]`` counts."""
    confusion = np.asarray(confusion, dtype=np.float64)
    n_classes = len(class_names)
    if confusion.shape != (n_classes, n_classes):
        raise ValueError(f"confusion has shape {confusion.shape}; expected ({n_classes}, {n_classes})")
    side = confusion_figure_inches(n_classes)
    figure = _figure(side, side)
    axes = figure.subplots()
    percent = 100.0 * confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1.0)
    image = axes.imshow(percent, cmap="Blues", vmin=0.0, vmax=100.0)
    figure.colorbar(image, ax=axes, shrink=0.8, label="% of true class")
    ticks = np.arange(n_classes)
    axes.set_xticks(ticks, labels=class_names, rotation=90, fontsize=6)
    axes.set_yticks(ticks, labels=class_names, fontsize=6)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    return save_figure(figure, url)


def _label(video_id: str, labels: Mapping[str, str] | None) -> str:
    return f"{video_id} ({labels[video_id]})" if labels and video_id in labels else video_id


def plot_retrieval_examples(
    store: FrameSource,
    query_ids: Sequence[str],
    neighbour_ids: Sequence[Sequence[str]],
    url: str,
    labels: Mapping[str, str] | None = None,
    n_frames: int = 4,
) -> str:
    """One row per query: its frame strip, then its nearest training videos (MotionFit supplement, Figure 1).

    ``neighbour_ids[q]`` lists the query's neighbours nearest first (e.g. the top 3 of
    ``evaluate.cosine_neighbours``); with ``labels`` (video id -> class name) titles show the class and a
    neighbour of the query's class is titled in green, others in red. Size: (1 + k) x 320 by Q x 110 pixels.
    """
    if len(query_ids) != len(neighbour_ids) or not query_ids:
        raise ValueError(
            f"need one neighbour list per query, got {len(query_ids)} queries, {len(neighbour_ids)}"
        )
    n_columns = 1 + max(len(row) for row in neighbour_ids)
    figure = _figure(n_columns * STRIP_WIDTH_IN, len(query_ids) * STRIP_HEIGHT_IN)
    grid = np.asarray(figure.subplots(len(query_ids), n_columns, squeeze=False))
    for row, (query_id, neighbours) in enumerate(zip(query_ids, neighbour_ids, strict=True)):
        _show_image(
            grid[row, 0], stored_frame_strip(store, query_id, n_frames), f"query: {_label(query_id, labels)}"
        )
        for column, neighbour_id in enumerate(neighbours, start=1):
            same = labels is not None and labels.get(neighbour_id) == labels.get(query_id)
            colour = "black" if labels is None else "green" if same else "red"
            title = f"#{column}: {_label(neighbour_id, labels)}"
            _show_image(grid[row, column], stored_frame_strip(store, neighbour_id, n_frames), title, colour)
        for column in range(1 + len(neighbours), n_columns):
            grid[row, column].set_axis_off()
    return save_figure(figure, url)


def plot_cluster_examples(
    store: FrameSource,
    clusters: pd.DataFrame,
    url: str,
    labels: Mapping[str, str] | None = None,
    n_clusters: int = 4,
    videos_per_cluster: int = 4,
    n_frames: int = 4,
    seed: int = 0,
) -> str:
    """Frame strips of a few member videos for the ``n_clusters`` largest clusters (one row per cluster).

    ``clusters`` has columns ``video_id, cluster`` (one k-means run); members are drawn with ``seed``. With
    ``labels`` the titles show each video's class, so a reader sees whether a cluster gathers one action.
    Size: videos_per_cluster x 320 by n_clusters x 110 pixels.
    """
    missing = {"video_id", "cluster"} - set(clusters.columns)
    if missing:
        raise ValueError(f"clusters lacks columns {sorted(missing)}; expected video_id and cluster")
    if clusters.empty:
        raise ValueError("clusters holds no video")
    sizes = clusters.groupby("cluster").size()
    largest = sizes.sort_index().sort_values(ascending=False, kind="stable").index[:n_clusters]
    rng = np.random.default_rng(seed)
    figure = _figure(videos_per_cluster * STRIP_WIDTH_IN, n_clusters * STRIP_HEIGHT_IN)
    grid = np.asarray(figure.subplots(n_clusters, videos_per_cluster, squeeze=False))
    for row in range(n_clusters):
        members: list[str] = []
        if row < len(largest):
            ids = np.sort(
                clusters.loc[clusters["cluster"] == largest[row], "video_id"].to_numpy().astype(str)
            )
            members = list(rng.choice(ids, size=min(videos_per_cluster, ids.size), replace=False))
        for column in range(videos_per_cluster):
            if column >= len(members):
                grid[row, column].set_axis_off()
                continue
            title = f"cluster {largest[row]} ({sizes[largest[row]]}): {_label(members[column], labels)}"
            _show_image(grid[row, column], stored_frame_strip(store, members[column], n_frames), title)
    return save_figure(figure, url)


def plot_gradcam(
    clip_frames: Sequence[np.ndarray],
    cams: GradCam,
    class_names: Sequence[str],
    url: str,
    titles: Sequence[str] | None = None,
    n_frames: int = 4,
    alpha: float = 0.5,
) -> str:
    """Grad-CAM heat maps over test clips: per clip one row with its frames and one with the overlay.

    ``clip_frames[b]`` ``[T, H, W, 3] uint8`` are the frames clip ``b`` was cut from (same field of view);
    ``cams`` is :func:`gradcam.grad_cam` on those clips. Size: 320 by 2 x B x 110 pixels.
    """
    n_clips = len(clip_frames)
    if n_clips == 0 or cams.heatmaps.shape[0] != n_clips:
        raise ValueError(
            f"need one heat map per clip, got {n_clips} clips and {cams.heatmaps.shape[0]} heat maps"
        )
    titles = [f"clip {b}" for b in range(n_clips)] if titles is None else list(titles)
    figure = _figure(STRIP_WIDTH_IN, 2 * n_clips * STRIP_HEIGHT_IN)
    grid = np.asarray(figure.subplots(2 * n_clips, 1, squeeze=False))
    for b, frames in enumerate(clip_frames):
        overlay = overlay_heatmap(frames, cams.heatmaps[b], alpha)
        predicted = f"{class_names[cams.classes[b]]} (p={cams.probabilities[b]:.2f})"
        _show_image(grid[2 * b, 0], frame_strip(frames, n_frames), titles[b])
        _show_image(grid[2 * b + 1, 0], frame_strip(overlay, n_frames), f"Grad-CAM: {predicted}")
    return save_figure(figure, url)
