"""IDT flows: trajectories per video, Fisher-vector model, per-video encoding, k-means clustering."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task

from motionfit.config import PipelineConfig
from motionfit.flows.artifacts import publish_image, publish_table, run_key
from motionfit.flows.execution import content_fingerprint, file_fingerprint, fingerprint, stage_task_options
from motionfit.flows.preprocess import run_data_config
from motionfit.flows.video_stages import require_no_failures, run_video_stage, stage_state
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import load_manifest, usable_videos
from motionfit.storage.matrix import matrix_fingerprint, read_video_matrix, write_video_matrix
from motionfit.storage.tables import read_table, write_table
from motionfit.tasks.data.clips import unlabelled_videos
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.evaluation.plots import plot_cluster_examples
from motionfit.tasks.idt.columns import IdtColumns
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.stage import CODE_VERSION as IDT_CODE_VERSION
from motionfit.tasks.idt.stage import extract_idt_videos
from motionfit.tasks.prior.clustering import CODE_VERSION as CLUSTER_CODE_VERSION
from motionfit.tasks.prior.clustering import cluster_quality, cluster_sizes, cluster_videos
from motionfit.tasks.prior.config import ClusterConfig, FisherConfig
from motionfit.tasks.prior.fisher import CODE_VERSION as FISHER_CODE_VERSION
from motionfit.tasks.prior.fisher import (
    encode_video,
    fit_fisher_model,
    load_fisher_model,
    sample_descriptors,
    save_fisher_model,
)

SKETCH_DIMENSION = "sketch_dim"
"""Name of fv.zarr's second axis: the count-sketched Fisher vector."""


@task(name="idt-batch")
def idt_batch(
    run_root: str,
    videos: list[tuple[str, str | None]],
    config: IdtConfig,
    inputs: str,
    memory_mib: float,
    decode: DecodeConfig,
) -> list[dict[str, Any]]:
    """Improved Dense Trajectories of one batch of (video id, human box file or None) into idt.zarr, each
    video within ``memory_mib`` (``runtime.video_memory_mib``); ``decode`` made the frames."""
    layout = RunLayout.at(run_root)
    video_ids = [video_id for video_id, _ in videos]
    boxes = {video_id: path for video_id, path in videos if path is not None}
    outcomes = extract_idt_videos(video_ids, layout, config, memory_mib, boxes, decode)
    return require_no_failures("idt", outcomes)


def human_box_files(config: PipelineConfig, manifest: pd.DataFrame, video_ids: list[str]) -> dict[str, str]:
    """Video id -> its human box file, ``<data.human_boxes_dir>/<video file stem>.bb``, for those of
    ``video_ids`` that have one; empty unless ``idt.human_boxes`` is on. The folder is listed once."""
    if not config.idt.human_boxes:
        return {}
    folder = run_data_config(config).human_boxes_dir
    if folder is None or not Path(folder).is_dir():
        raise FileNotFoundError(
            f"idt.human_boxes is on but data.human_boxes_dir ({folder}) is not a folder: give the folder of "
            "<video file stem>.bb box files, or turn idt.human_boxes off"
        )
    files = {path.stem: str(path) for path in Path(folder).glob("*.bb")}
    stems = manifest.set_index("video_id").loc[video_ids, "path"].map(lambda path: Path(path).stem)
    shared = stems[stems.duplicated(keep=False) & stems.isin(files)]
    if len(shared):
        raise ValueError(
            f"videos {', '.join(shared.index[:5])} share a file name, so {folder} cannot tell their human "
            "boxes apart: rename them"
        )
    return {video_id: files[stem] for video_id, stem in stems.items() if stem in files}


@task(name="fv-fit")
def fv_fit_task(
    run_root: str, video_ids: list[str], config: FisherConfig, idt_columns: IdtColumns, inputs: str
) -> str:
    """Fit PCA + GMM on a seeded sample of the videos' descriptors; returns the saved model's URL."""
    layout = RunLayout.at(run_root)
    arrays = layout.store("idt").arrays(video_ids)  # opened lazily: only the sampled rows are read
    sample = sample_descriptors(arrays, config, np.random.default_rng(config.sample_seed), idt_columns)
    model = fit_fisher_model(sample, config, idt_columns)
    url = layout.fisher_model
    buffer = io.BytesIO()
    save_fisher_model(model, buffer)
    fs.write_bytes_atomic(url, buffer.getvalue())
    return url


@task(name="fv-encode-batch")
def fv_encode_batch(run_root: str, video_ids: list[str], model_url: str, inputs: str) -> str:
    """Sketched Fisher vectors of one batch, written as one part array; returns the part's URL. A video's
    trajectories are read one GMM batch of rows at a time (32768 rows of 436 float32, 57 MB), so its
    length does not bound the worker's memory."""
    layout = RunLayout.at(run_root)
    model = load_fisher_model(model_url)
    store = layout.store("idt")
    rows = model.config.gmm.batch_size
    vectors = np.stack([encode_video(store.row_blocks(video_id, rows), model) for video_id in video_ids])
    url = layout.fv_part(inputs)
    write_video_matrix(url, video_ids, vectors, SKETCH_DIMENSION)
    return url


@task(name="cluster")
def cluster_task(run_root: str, config: ClusterConfig, inputs: str) -> dict[str, float]:
    """k-means runs on fv.zarr into clusters.parquet; returns the number of clusters and videos."""
    layout = RunLayout.at(run_root)
    video_ids, vectors = read_video_matrix(layout.fv_vectors)
    clusters = cluster_videos(vectors, video_ids, config)
    write_table(layout.clusters, clusters)
    return {"k": int(clusters["k"].iloc[0]), "videos": len(video_ids)}


def _idt_fingerprints(layout: RunLayout, video_ids: list[str]) -> list[tuple[str, str | float | None]]:
    return list(layout.markers("idt").identities(video_ids).items())


@flow(name="idt")
def idt_flow(config: PipelineConfig) -> Any:
    """IDT of every decoded unlabelled video (pipeline mode: also needs its stored TV-L1 flow).

    The IDT prior (PCA, GMM, k-means) is fitted on the videos its student trains on, the unlabelled ones
    (source videos and the target's ``unlabelled`` split): no target train or test video reaches it, and its
    cluster quality is measured against the source's held-back labels only."""
    layout = RunLayout.at(config.run_root)
    upstream = ("decode", "flow") if config.idt.mode == "pipeline" else ("decode",)
    manifest = load_manifest(layout)
    unlabelled = set(unlabelled_videos(manifest))
    video_ids = [v for v in usable_videos(manifest, *upstream)["video_id"] if v in unlabelled]
    frames = layout.markers("decode").identities(video_ids)
    boxes = human_box_files(config, manifest, video_ids)
    if config.idt.human_boxes:
        get_run_logger().info("idt: human boxes for %d of %d videos", len(boxes), len(video_ids))
    summary = run_video_stage(
        "idt",
        idt_batch,
        layout,
        [(video_id, boxes.get(video_id)) for video_id in video_ids],
        video_ids,
        lambda item: (item[0], frames[item[0]], item[1] and file_fingerprint(item[1])),
        config.idt,
        config.runtime,
        IDT_CODE_VERSION,
        max(1, config.runtime.videos_per_batch // 4),
        (config.runtime.video_memory_mib, config.decode),
    )
    publish_descriptor_counts(layout)
    return stage_state("idt", summary)


def publish_descriptor_counts(layout: RunLayout) -> pd.DataFrame:
    """Trajectories per video (with frames and trajectories per frame) as the ``idt-descriptor-counts``
    table; its description gives the totals."""
    markers = layout.markers("idt")
    rows = []
    for video_id, record in sorted(markers.compact_records(markers.committed_ids()).items()):
        if "frames" not in record:  # committed before IDT commits recorded their frame count
            record = {**record, "frames": len(markers.committed_info(video_id).get("counts_per_frame", []))}
        trajectories, frames = record["shape"][0], record["frames"] or 1
        rows.append({"video_id": video_id, "trajectories": trajectories, "frames": frames})
    counts = pd.DataFrame(rows, columns=["video_id", "trajectories", "frames"])
    counts["per_frame"] = counts["trajectories"] / counts["frames"]
    description = (
        f"IDT trajectories of {len(counts)} videos: {int(counts['trajectories'].sum())} in all, "
        f"median {counts['trajectories'].median():.0f} per video, {counts['per_frame'].mean():.1f} per frame"
    )
    publish_table(run_key(layout.root, "idt-descriptor-counts"), counts, description)
    return counts


@flow(name="fv-fit")
def fv_fit_flow(config: PipelineConfig) -> dict[str, str]:
    """Fit the Fisher-vector model (PCA + GMM) on a seeded sample of the videos' IDT descriptors."""
    layout = RunLayout.at(config.run_root)
    video_ids = sorted(usable_videos(load_manifest(layout), "idt")["video_id"])
    if not video_ids:
        raise RuntimeError(f"no video has IDT descriptors in {layout.root}: run the idt stage first")
    inputs = fingerprint("fv_fit", FISHER_CODE_VERSION, _idt_fingerprints(layout, video_ids))
    model_url = fv_fit_task.with_options(**stage_task_options(layout, config.runtime))(
        layout.root, video_ids, config.fisher, config.idt.columns(), inputs
    )
    return {"model": model_url}


@flow(name="fv-encode")
def fv_encode_flow(config: PipelineConfig) -> dict[str, int]:
    """Encode every video with the fitted model and gather the vectors in fv.zarr (rows labelled by the
    ``video_id`` coordinate)."""
    logger = get_run_logger()
    layout = RunLayout.at(config.run_root)
    model_url = layout.fisher_model
    if not fs.exists(model_url):
        raise RuntimeError(f"no Fisher-vector model at {model_url}: run the fv_fit stage first")
    video_ids = sorted(usable_videos(load_manifest(layout), "idt")["video_id"])
    size = config.runtime.videos_per_batch * 4
    groups = [video_ids[i : i + size] for i in range(0, len(video_ids), size)]
    encode = fv_encode_batch.with_options(**stage_task_options(layout, config.runtime))
    identities = layout.markers("idt").identities(video_ids)
    futures = [
        encode.submit(
            layout.root,
            group,
            model_url,
            fingerprint(
                "fv_encode",
                FISHER_CODE_VERSION,
                content_fingerprint(model_url),
                [(video_id, identities[video_id]) for video_id in group],
            ),
        )
        for group in groups
    ]
    parts = [read_video_matrix(future.result()) for future in futures]
    gathered_ids = [video_id for ids, _ in parts for video_id in ids]
    if gathered_ids != video_ids:
        raise RuntimeError(f"Fisher-vector parts of {layout.root} do not hold the videos they were asked for")
    vectors = np.concatenate([part for _, part in parts])
    write_video_matrix(layout.fv_vectors, video_ids, vectors, SKETCH_DIMENSION, {"fisher_model": model_url})
    logger.info("Fisher vectors: %d videos x %d dims", *vectors.shape)
    return {"videos": len(video_ids), "dims": int(vectors.shape[1])}


@flow(name="cluster")
def cluster_flow(config: PipelineConfig) -> dict[str, float]:
    """k-means of the videos in Fisher-vector space; publishes the cluster sizes and, where labels exist,
    NMI, AMI and purity."""
    layout = RunLayout.at(config.run_root)
    inputs = fingerprint("cluster", CLUSTER_CODE_VERSION, matrix_fingerprint(layout.fv_vectors))
    result = cluster_task.with_options(**stage_task_options(layout, config.runtime))(
        layout.root, config.cluster, inputs
    )
    clusters = read_table(layout.clusters)
    sizes = cluster_sizes(clusters)
    publish_table(run_key(layout.root, "cluster-sizes"), sizes.head(200), "Videos per cluster")
    labels = video_labels(load_manifest(layout))
    quality = cluster_quality(clusters, labels)
    publish_table(
        run_key(layout.root, "cluster-quality"), quality, "NMI, AMI (0: chance) and purity against labels"
    )
    picture = plot_cluster_examples(
        layout.store("frames"),
        clusters[clusters["run"] == 0],
        layout.plot("cluster_examples"),
        labels=labels.astype(str).to_dict(),
    )
    publish_image(
        run_key(layout.root, "cluster-examples"),
        picture,
        "Frame strips of member videos of the largest clusters (run 0)",
    )
    return {**result, "nmi": float(quality["nmi"].mean()) if len(quality) else float("nan")}


def video_labels(manifest: pd.DataFrame) -> pd.Series:
    """Class names per video_id for diagnostics: target labels, plus source labels held back from training."""
    labels = manifest.set_index("video_id")["label"].copy()
    if "heldout_label" in manifest:
        heldout = manifest.set_index("video_id")["heldout_label"]
        labels = labels.where(labels.notna(), heldout)
    return labels.dropna()
