"""The run summary on the root flow run: what a person sent to that run sees first in the Prefect UI."""

from __future__ import annotations

import pandas as pd
from prefect.settings import PREFECT_UI_URL

from motionfit.flows.artifacts import publish_markdown, run_key
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import left_out_videos, load_manifest, manifest_exists, stage_summary
from motionfit.tasks.evaluation.metrics import read_metrics
from motionfit.tasks.evaluation.report import left_out_section, markdown_table


def _artifact_link(key: str) -> str:
    ui_url = PREFECT_UI_URL.value()
    return f"[{key}]({ui_url.rstrip('/')}/artifacts/key/{key})" if ui_url else f"`{key}`"


def run_summary_markdown(
    layout: RunLayout, name: str, stages: list[str], state: str, seed: int, error: str | None = None
) -> str:
    """The summary of a run root after (or during) a flow run: state, videos per stage, missing, failed and
    excluded videos with their reasons, test top-1 per method and where the report is."""
    lines = [f"# motionfit run {name}: {state}", "", f"Run root: `{layout.root}`", ""]
    lines += [f"Stages of this flow run: {', '.join(stages)}.", ""]
    if error:
        lines += ["## Error", "", "```", error, "```", ""]
    manifest = load_manifest(layout) if manifest_exists(layout) else None
    if manifest is not None:
        lines += ["## Videos per stage", "", markdown_table(stage_summary(manifest)), ""]
        lines += left_out_section(left_out_videos(manifest), layout.root)
    metrics = read_metrics(layout)
    top1 = metrics[(metrics["metric"] == "top1") & (metrics["seed"] == seed) & (metrics["split"] == "test")]
    if len(top1):
        table = pd.DataFrame({"method": top1["method"], "test top-1 (%)": top1["value"].round(1)})
        lines += [f"## Test top-1, seed {seed}", "", markdown_table(table), ""]
    if fs.exists(layout.report):
        link = _artifact_link(run_key(layout.root, "report"))
        lines += [f"Full report: artifact {link}, file `{layout.report}`.", ""]
    return "\n".join(lines).rstrip() + "\n"


def publish_run_summary(
    layout: RunLayout, name: str, stages: list[str], state: str, seed: int, error: str | None = None
) -> str:
    """Publish :func:`run_summary_markdown` as the run's ``summary`` artifact (on the calling flow run)."""
    markdown = run_summary_markdown(layout, name, stages, state, seed, error)
    publish_markdown(run_key(layout.root, "summary"), markdown, f"Summary of {layout.root}")
    return markdown
