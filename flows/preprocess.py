"""Preprocessing flows: ingest (and the synthetic data set), decode, TV-L1 optical flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from motionfit.config import PipelineConfig
from motionfit.flows.artifacts import publish_table, run_key
from motionfit.flows.execution import file_fingerprint
from motionfit.flows.video_stages import require_no_failures, run_video_stage, stage_state
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import (
    load_manifest,
    manifest_exists,
    save_manifest,
    stage_summary,
    usable_videos,
)
from motionfit.tasks.data.clips import clip_span
from motionfit.tasks.data.config import DataConfig, DecodeConfig
from motionfit.tasks.data.decode import CODE_VERSION as DECODE_CODE_VERSION
from motionfit.tasks.data.decode import decode_videos
from motionfit.tasks.data.ingest import build_manifest, synthetic_data_config
from motionfit.tasks.data.leaks import split_leaks
from motionfit.tasks.data.preflight import DataProblems, manifest_problems
from motionfit.tasks.data.synth import generate_dataset
from motionfit.tasks.methods import METHODS
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import CODE_VERSION as FLOW_CODE_VERSION
from motionfit.tasks.motion.tvl1 import compute_flows


@task(name="decode-batch")
def decode_batch(
    run_root: str, videos: list[tuple[str, str]], config: DecodeConfig, inputs: str
) -> list[dict[str, Any]]:
    """Decode one batch of (video_id, path) into frames.zarr (``inputs`` fingerprints the files)."""
    return require_no_failures("decode", decode_videos(videos, RunLayout.at(run_root), config))


@task(name="flow-batch")
def tvl1_batch(
    run_root: str, video_ids: list[str], config: FlowConfig, inputs: str, memory_mib: float
) -> list[dict[str, Any]]:
    """TV-L1 flow of one batch of decoded videos into flow.zarr (``inputs`` fingerprints their frames), each
    video within ``memory_mib`` (``runtime.video_memory_mib``)."""
    return require_no_failures("flow", compute_flows(video_ids, RunLayout.at(run_root), config, memory_mib))


def publish_manifest_summary(layout: RunLayout) -> pd.DataFrame:
    """The manifest's videos per stage and status, as the run's ``manifest-summary`` table artifact."""
    summary = stage_summary(load_manifest(layout))
    publish_table(run_key(layout.root, "manifest-summary"), summary, f"Videos per stage: {layout.root}")
    return summary


def merge_previous_status(manifest: pd.DataFrame, layout: RunLayout) -> pd.DataFrame:
    """Carry the stage status columns (and the exclusion reasons) of an existing manifest over to a
    re-ingested one."""
    if not manifest_exists(layout):
        return manifest
    previous = load_manifest(layout)
    keep = ["video_id", *(c for c in previous.columns if c.startswith("status_") or c == "exclusion")]
    return manifest.merge(previous[keep], on="video_id", how="left")


def run_data_config(config: PipelineConfig) -> DataConfig:
    """The ``data`` section a run reads: its own, or with ``synth`` the generated data set's locations with
    the run's choices of labels and sources."""
    if config.synth is None:
        return config.data
    kept = {
        "labelled_fraction",
        "labelled_sampling",
        "labelled_seed",
        "target_train_in_source",
        "max_source_videos",
        "source_seed",
        "leaks",
    }
    keep = config.data.model_dump(include=kept)
    return synthetic_data_config(Path(config.synth_root)).model_copy(update=keep)


@flow(name="ingest")
def ingest_flow(config: PipelineConfig) -> dict[str, int]:
    """Write the synthetic data set when configured, then list every video of the run in manifest.parquet."""
    logger = get_run_logger()
    layout = RunLayout.at(config.run_root)
    if config.synth is not None:
        summary = generate_dataset(Path(config.synth_root), config.synth)
        logger.info("synthetic data set in %s: %s", config.synth_root, summary)
    data = run_data_config(config)
    manifest = merge_previous_status(build_manifest(data), layout)
    save_manifest(layout, manifest)
    publish_manifest_summary(layout)
    counts = manifest.groupby(["dataset", "status"]).size()
    logger.info("manifest: %s", counts.to_dict())
    methods = [METHODS[name] for name in config.methods]
    problems = manifest_problems(manifest, methods, config.cluster.n_clusters)
    if problems:
        listed = "\n- ".join(problems)
        raise DataProblems(f"the videos of {config.run_root} cannot serve the run's methods:\n- {listed}")
    leaks = split_leaks(manifest)
    if leaks:
        listed = "\n- ".join(leaks)
        message = f"the videos of {config.run_root} leak between splits ({data.leaks}):\n- {listed}"
        if data.leaks == "refuse":
            raise DataProblems(message)
        logger.warning("%s", message)
    return {"videos": len(manifest), "missing": int((manifest["status"] != "ok").sum())}


def frames_needed(config: PipelineConfig) -> tuple[int, str]:
    """The fewest decoded frames a video needs to serve the run, and what needs them: ``decode.min_frames``,
    a clip of a training stage of the run (clips count frames on the flow axis, one fewer than the video's,
    see :mod:`motionfit.tasks.data.clips`), or, when a method needs the IDT prior, a trajectory of
    ``idt.track_length`` steps (``track_length + 1`` frames)."""
    sections = {"teacher": config.teacher}
    for method in (METHODS[name] for name in config.methods):
        if method.student_stage:
            sections[method.section] = getattr(config, method.section)
        if method.finetuned:
            sections["finetune"] = config.finetune
    needs = {"decode.min_frames": config.decode.min_frames}
    for name, section in sections.items():
        span = clip_span(section.clip_length, section.frame_stride)
        needs[f"{name} clips span {span} frames"] = span + 1
    if any(METHODS[name].needs_idt for name in config.methods):
        needs[f"IDT trajectories of idt.track_length {config.idt.track_length}"] = config.idt.track_length + 1
    needed_by = max(needs, key=needs.__getitem__)
    return needs[needed_by], needed_by


@flow(name="decode")
def decode_flow(config: PipelineConfig) -> Any:
    """Decode every ingested video into frames.zarr, in batches on the configured task runner; a video with
    fewer frames than the run needs (:func:`frames_needed`) or smaller than ``decode.min_side`` is excluded.
    Then refuse the run, one line per problem, when the decoded videos cannot serve its methods."""
    layout = RunLayout.at(config.run_root)
    needed, needed_by = frames_needed(config)
    get_run_logger().info(
        "decode: a video needs %d frames (%s); shorter ones are excluded", needed, needed_by
    )
    videos = usable_videos(load_manifest(layout))
    items = list(zip(videos["video_id"], videos["path"], strict=True))
    summary = run_video_stage(
        "decode",
        decode_batch,
        layout,
        items,
        list(videos["video_id"]),
        lambda item: (item[0], file_fingerprint(item[1])),
        config.decode.model_copy(update={"min_frames": needed}),
        config.runtime,
        DECODE_CODE_VERSION,
    )
    methods = [METHODS[name] for name in config.methods]
    problems = manifest_problems(load_manifest(layout), methods, config.cluster.n_clusters, ("decode",))
    if problems:
        listed = "\n- ".join(problems)
        raise DataProblems(
            f"the decoded videos of {config.run_root} cannot serve the run's methods (a video needs {needed} "
            f"frames: {needed_by}; motionfit status lists the excluded and failed videos):\n- {listed}"
        )
    return stage_state("decode", summary)


@flow(name="optical-flow")
def tvl1_flow(config: PipelineConfig) -> Any:
    """TV-L1 flow of every decoded video into flow.zarr, in batches on the configured task runner."""
    layout = RunLayout.at(config.run_root)
    video_ids = list(usable_videos(load_manifest(layout), "decode")["video_id"])
    frames = layout.markers("decode").identities(video_ids)
    summary = run_video_stage(
        "flow",
        tvl1_batch,
        layout,
        video_ids,
        video_ids,
        lambda video_id: (video_id, frames[video_id]),
        config.flow,
        config.runtime,
        FLOW_CODE_VERSION,
        task_args=(config.runtime.video_memory_mib,),
    )
    return stage_state("flow", summary)
