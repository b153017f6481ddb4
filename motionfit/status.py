"""``motionfit status``: what a run has finished, stage by stage and video by video."""

from __future__ import annotations

import pandas as pd

from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import left_out_videos, load_manifest, manifest_exists, stage_summary


def _text_table(table: pd.DataFrame) -> str:
    return table.to_string(index=False) if len(table) else "(none)"


def run_outputs(layout: RunLayout) -> pd.DataFrame:
    """One row per whole-run output (model, tables, checkpoints) with whether it exists."""
    outputs = {
        "fv_fit": layout.fisher_model,
        "fv_encode": layout.fv_vectors,
        "cluster": layout.clusters,
        "pseudo_label": layout.pseudo_labels,
        "evaluate": layout.metrics,
        "report": layout.report,
    }
    rows = [(stage, url, "done" if fs.exists(url) else "missing") for stage, url in outputs.items()]
    planned = planned_epochs(layout)
    shared = {
        entry.removeprefix("checkpoints/") for entry, _ in layout.sources if entry.startswith("checkpoints/")
    }
    for name in sorted(set(fs.list_names(layout.checkpoint_root)) | shared):
        history = layout.history(name)
        finished = len(pd.read_parquet(history, columns=["epoch"])) if fs.exists(history) else 0
        rows.append((f"train:{name}", layout.checkpoints(name), f"epoch {finished}/{planned.get(name, '?')}"))
    return pd.DataFrame(rows, columns=["stage", "output", "state"])


def planned_epochs(layout: RunLayout) -> dict[str, int]:
    """Epochs each training stage of the run's config (``config.yaml``) runs; empty when the run root has no
    config that loads."""
    import yaml

    from motionfit.config import PipelineConfig
    from motionfit.tasks.methods import METHODS, TEACHER_STAGE

    filesystem, path = fs.resolve(layout.run_config)  # a local path or an object-store URL
    try:
        config = PipelineConfig.model_validate(yaml.safe_load(filesystem.cat_file(path)) or {})
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    planned = {TEACHER_STAGE: config.teacher.epochs}
    for method in METHODS.values():
        if method.student_stage:
            planned[method.student_stage] = getattr(config, method.section).epochs
        if method.finetune_stage:
            planned[method.finetune_stage] = config.finetune.epochs
    return planned


def live_video_counts(layout: RunLayout, n_videos: int) -> pd.DataFrame:
    """Committed, excluded and failed videos per per-video stage, read from the markers (current even while a
    stage runs, unlike the manifest's status columns, which a stage refreshes when it ends)."""
    rows = []
    for stage in ("decode", "flow", "idt"):
        markers = layout.markers(stage)
        counts = [len(markers.committed_ids()), len(markers.exclusions()), len(markers.failures())]
        rows.append((stage, *counts, max(n_videos - sum(counts), 0)))
    return pd.DataFrame(rows, columns=["stage", "committed", "excluded", "failed", "not yet"])


def last_flow_run(layout: RunLayout) -> str | None:
    """The last Prefect flow run on the run root, with its state when the server it ran on is the configured
    one (``PREFECT_API_URL``) and answers; ``None`` when no flow run is recorded."""
    if not fs.exists(layout.flow_runs):
        return None
    run = fs.read_json(layout.flow_runs)[-1]
    line = f"last Prefect flow run: {run['name']} ({run['id']}), started {run['started']}"
    if not run.get("api_url"):
        return f"{line}, on the command's embedded Prefect server (set PREFECT_API_URL to follow runs)"
    from prefect.settings import PREFECT_API_URL  # the environment's or the Prefect profile's

    if (PREFECT_API_URL.value() or "").rstrip("/") != run["api_url"].rstrip("/"):
        return f"{line}, on {run['api_url']} (set PREFECT_API_URL to it to see the run's state)"
    from motionfit.flows.runs import root_flow_run_state

    state = root_flow_run_state(run["api_url"], run["id"])
    return f"{line}: {state or 'unknown (the server did not answer)'}"


def render_status(run_root: str) -> str:
    """Videos per stage and status (from the manifest), every missing, failed and excluded video with its
    reason, and the run-level outputs."""
    layout = RunLayout.at(run_root)
    if not manifest_exists(layout):
        return f"{layout.root}: no manifest yet (the ingest stage has not run)"
    manifest = load_manifest(layout)
    parts = [
        f"run root: {layout.root}",
        "",
        "videos per stage and status (manifest):",
        _text_table(stage_summary(manifest)),
        "",
        "per-video stages now (commit markers):",
        _text_table(live_video_counts(layout, int((manifest["status"] == "ok").sum()))),
    ]
    left_out = left_out_videos(manifest)[["video_id", "outcome", "reason"]]
    if len(left_out):
        parts += ["", f"missing, failed and excluded videos ({len(left_out)}):", _text_table(left_out)]
    parts += ["", "run outputs:", _text_table(run_outputs(layout))]
    flow_run = last_flow_run(layout)
    return "\n".join([*parts, "", flow_run] if flow_run else parts)
