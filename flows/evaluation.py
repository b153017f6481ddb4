"""The evaluate flow: metrics of every method, report.md, plots, and all of it as Prefect artifacts."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from motionfit.config import PipelineConfig, changed_label_settings
from motionfit.flows.artifacts import publish_image, publish_markdown, publish_table, run_key
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import left_out_videos, load_manifest
from motionfit.tasks.evaluation.metrics import append_metrics
from motionfit.tasks.evaluation.report import LISTED_VIDEOS, ReportContext, write_report
from motionfit.tasks.evaluation.stage import evaluate_run


@task(name="evaluate", tags=["gpu"])
def evaluate_task(run_root: str, config: PipelineConfig) -> dict[str, Any]:
    """Evaluate the trained methods, merge the rows into metrics.parquet, write report.md and publish them."""
    layout = RunLayout.at(run_root)
    manifest = load_manifest(layout)
    left_out = left_out_videos(manifest)
    result = evaluate_run(
        layout,
        manifest,
        list(config.methods),
        config,
        config.runtime.resolved_device(),
        config.runtime.seed,
    )
    metrics = append_metrics(layout, result.metrics)
    teacher_input = "flow" if config.teacher.modality == "flow" else "RGB"
    context = ReportContext(
        title=f"motionfit report: {config.name}",
        dataset=config.data.target_format if config.synth is None else "synthetic motion data set",
        backbone=f"{config.finetune.arch} x{config.finetune.width_multiplier:g}",
        frames=result.frames,
        resolution=result.resolution,
        backbones={
            "teacher": f"{config.teacher.arch} x{config.teacher.width_multiplier:g} ({teacher_input})"
        },
        inputs={"teacher": teacher_input},
        changed=changed_label_settings([config]),
        confused_pairs=result.confused_pairs,
        confused_method=result.confused_method,
        plots=result.plots,
        methods=tuple(config.methods),
        test_videos=result.test_videos,
        listed_test_videos=result.listed_test_videos,
        left_out=tuple(left_out.head(LISTED_VIDEOS).fillna("").to_dict("records")),
        n_left_out=len(left_out),
    )
    markdown = write_report(layout, context)
    publish_table(run_key(layout.root, "metrics"), metrics, f"All metrics of {layout.root} (long form)")
    publish_markdown(
        run_key(layout.root, "report"), markdown, f"Report of {layout.root}", image_base_url=layout.root
    )
    for caption, url in result.plots.items():
        name = url.rsplit("/", 1)[-1].removesuffix(".png")
        publish_image(run_key(layout.root, "plot", name), url, caption)
    top1 = metrics[(metrics["metric"] == "top1") & (metrics["seed"] == config.runtime.seed)]
    return {row.method: float(row.value) for row in top1.itertuples()}


@flow(name="evaluate")
def evaluate_flow(config: PipelineConfig) -> dict[str, Any]:
    """Top-1, retrieval, few-shot, cost and diagnostics of every method; report and artifacts."""
    layout = RunLayout.at(config.run_root)
    return evaluate_task(layout.root, config)
