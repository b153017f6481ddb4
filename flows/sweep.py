"""A sweep as one Prefect flow: its settings' pipelines as subflows sharing every output their configs agree
on, then one comparison table.

Each setting runs on its own root, ``<sweep root>/settings/<setting>-seed<seed>``, which holds its config,
Prefect results, metrics and report. Every other output lives under ``<sweep root>/shared/<output>-<key>``,
where the key hashes what the output is computed from (:func:`output_keys`): settings whose configs agree up
to an output find it there already, and the stages' own cache keys and per-video commits skip it. A sweep
over student settings therefore decodes, computes flow and IDT, and trains the teacher once. The per-video
stores do not depend on the frames a run needs (``decode.min_frames``, clip lengths): one store serves every
clip length, and only the manifest, which records the exclusions, is kept per frame requirement.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from motionfit.config import PipelineConfig, changed_label_settings
from motionfit.flows.artifacts import publish_markdown, run_key
from motionfit.flows.pipeline import pipeline_flow
from motionfit.flows.preprocess import frames_needed, run_data_config
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.lock import holding
from motionfit.storage.tables import read_table, table_exists, write_table
from motionfit.sweep import Setting, Sweep
from motionfit.tasks.methods import METHODS, label
from motionfit.tasks.per_video import inputs_key

SHARED_ENTRIES = {
    "manifest": ("manifest.parquet",),
    "frames": ("frames.zarr", "_markers/decode"),
    "flow": ("flow.zarr", "_markers/flow"),
    "idt": ("idt.zarr", "_markers/idt"),
    "fisher": ("fv_model", "fv_parts.zarr", "fv.zarr"),
    "clusters": ("clusters.parquet",),
    "pseudo_labels": ("pseudo_labels.parquet",),
    "supervised_labels": ("supervised_labels.parquet",),
}
"""The run-root entries of each shared output; the training stages' ``checkpoints/<stage>`` are the others."""


class SettingsFailed(RuntimeError):
    """Settings of a sweep failed; ``markdown`` is the table, which marks them."""

    def __init__(self, message: str, markdown: str) -> None:
        super().__init__(message)
        self.markdown = markdown


def output_keys(config: PipelineConfig) -> dict[str, str]:
    """A key per output of ``config``'s run (:data:`SHARED_ENTRIES`, and ``checkpoints/<stage>`` of the
    teacher and of its methods) that hashes the config sections and upstream keys it is computed from: equal
    keys, equal outputs."""
    seed, device = config.runtime.seed, config.runtime.device
    flow_settings = config.flow.model_dump(
        mode="json", exclude={"threads_per_worker", "device", "batch_size"}
    )
    keys = {"frames": inputs_key("frames", config.decode.model_dump(mode="json", exclude={"min_frames"}))}
    keys["flow"] = inputs_key("flow", keys["frames"], flow_settings)
    idt_settings = config.idt.model_dump(mode="json", by_alias=True, exclude={"human_boxes"})
    # Without human boxes, the key from before they existed.
    boxes = [str(run_data_config(config).human_boxes_dir)] if config.idt.human_boxes else []
    keys["idt"] = inputs_key("idt", keys["frames"], idt_settings, *boxes)
    needs_idt = any(METHODS[name].needs_idt for name in config.methods)
    keys["manifest"] = inputs_key(
        "manifest",
        config.data,
        config.synth,
        config.synth_root,
        frames_needed(config)[0],
        keys["frames"],
        keys["flow"],
        keys["idt"] if needs_idt else None,
    )
    manifest = keys["manifest"]
    keys["fisher"] = inputs_key("fisher", manifest, keys["idt"], config.fisher)
    keys["clusters"] = inputs_key("clusters", keys["fisher"], config.cluster)
    teacher = keys["checkpoints/teacher"] = inputs_key("teacher", manifest, config.teacher, seed, device)
    keys["pseudo_labels"] = inputs_key("pseudo_labels", teacher, config.pseudo_label, device)
    keys["supervised_labels"] = inputs_key("supervised_labels", manifest)
    for method in (METHODS[name] for name in config.methods):
        student = "random"
        if method.student_stage is not None:
            upstream = keys.get(method.trains_on or "")  # pseudo-labels, clusters or supervised labels
            section = getattr(config, method.section)
            student = inputs_key(method.student_stage, manifest, teacher, upstream, section, seed, device)
            keys[f"checkpoints/{method.student_stage}"] = student
        if method.finetune_stage is not None:
            keys[f"checkpoints/{method.finetune_stage}"] = inputs_key(
                method.finetune_stage, manifest, config.finetune, student, seed, device
            )
    return keys


def shared_sources(sweep_root: str, keys: dict[str, str]) -> dict[str, str]:
    """Where a setting with output ``keys`` reads each shared entry: ``<sweep_root>/shared/<output>-<key>``
    (one folder per output and key)."""
    sources = {}
    for output, key in keys.items():
        folder = fs.join(sweep_root, "shared", f"{output.replace('/', '-')}-{key}")
        for entry in SHARED_ENTRIES.get(output, (output,)):
            sources[entry] = folder
    return sources


def sweep_table(
    sweep: Sweep, runs: list[tuple[Setting, int, PipelineConfig]], failed: set[str]
) -> pd.DataFrame:
    """One row per setting: its overrides, then per method and metric the mean and std over its seeds'
    test-split values (std 0 for one seed) and the number of seeds scored; methods in the sweep's order
    (else the preset's), metrics in the order ``metrics`` lists them."""
    varied = sweep.varied()
    methods = list(sweep.methods or (runs[0][2].methods if runs else ()))

    def order(column: str) -> tuple[int, int]:
        method, metric = column.split(" ", 1)
        return (methods.index(method) if method in methods else len(methods), sweep.metrics.index(metric))

    values: dict[str, dict[str, list[float]]] = {}
    for setting, seed, config in runs:
        layout = RunLayout.at(config.run_root)
        scored = values.setdefault(setting.name, {})
        if setting.name in failed or not table_exists(layout.metrics):
            continue
        metrics = read_table(layout.metrics)
        chosen = metrics[metrics["metric"].isin(sweep.metrics) & (metrics["seed"] == seed)]
        chosen = chosen[chosen["split"].fillna("test") == "test"]
        for row in chosen.itertuples():
            scored.setdefault(f"{row.method} {row.metric}", []).append(float(row.value))
    rows = []
    for setting in sweep.expanded():
        row: dict[str, Any] = {"setting": setting.name}
        row |= {key: str(setting.set.get(key, "")) for key in varied}
        row["state"] = "failed" if setting.name in failed else "done"
        scored = values.get(setting.name, {})
        for column in sorted(scored, key=order):
            series = pd.Series(scored[column])
            row[column] = series.mean()
            row[f"{column} std"] = series.std(ddof=0)
            row[f"{column} seeds"] = len(series)
        rows.append(row)
    return pd.DataFrame(rows)


def table_markdown(sweep: Sweep, table: pd.DataFrame, changed: Collection[str]) -> str:
    """The table as markdown: a row per setting, a column per method and metric, ``mean ± std`` over
    seeds; a method whose label names one of the ``changed`` settings is headed by its short label."""
    varied = sweep.varied()
    scores = [
        c
        for c in table.columns
        if c not in {"setting", "state", *varied} and not c.endswith((" std", " seeds"))
    ]
    header = ["setting", *varied, *(_heading(c, changed) for c in scores)]
    lines = [
        f"# Sweep {sweep.name}",
        "",
        f"Mirrors: {sweep.mirrors}. Seeds: {', '.join(map(str, sweep.seeds))}.",
        "",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [
            row["setting"] + (" (failed)" if row["state"] == "failed" else ""),
            *(row[k] for k in varied),
        ]
        for column in scores:
            mean, std, n = row.get(column), row.get(f"{column} std"), row.get(f"{column} seeds")
            cells.append("–" if pd.isna(mean) else f"{mean:.1f}" + (f" ± {std:.1f}" if n and n > 1 else ""))
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def _heading(column: str, changed: Collection[str]) -> str:
    method, metric = column.split(" ", 1)
    return f"{label(method, changed)} {metric}"


@flow(name="motionfit-sweep")
def sweep_flow(
    sweep: Sweep, runs: list[tuple[Setting, int, PipelineConfig]], sweep_root: str
) -> dict[str, Any]:
    """Run every (setting, seed, config) of ``sweep`` as a subflow on its own root, sharing outputs under
    ``sweep_root/shared``; a failed setting is reported and the others go on. Writes
    ``sweep/<name>/table.parquet`` and ``table.md`` and publishes the table; fails when a setting failed."""
    logger = get_run_logger()
    failed: set[str] = set()
    with holding(fs.join(sweep_root, "_lock.json")):
        for number, (setting, seed, config) in enumerate(runs, start=1):
            logger.info("setting %d/%d: %s, seed %d", number, len(runs), setting.name, seed)
            RunLayout.at(config.run_root).share(shared_sources(sweep_root, output_keys(config)))
            try:
                pipeline_flow.with_options(flow_run_name=f"{sweep.name}-{setting.name}-seed{seed}")(config)
            except Exception as error:  # one setting's failure is its row's; the sweep goes on
                logger.error("setting %s, seed %d failed: %s", setting.name, seed, error)
                failed.add(setting.name)
    table = sweep_table(sweep, runs, failed)
    folder = fs.join(sweep_root, "sweep", sweep.name)
    write_table(fs.join(folder, "table.parquet"), table)
    markdown = table_markdown(sweep, table, changed_label_settings(config for _, _, config in runs))
    fs.write_bytes_atomic(fs.join(folder, "table.md"), markdown.encode())
    publish_markdown(
        run_key(sweep_root, "sweep", sweep.name), markdown, f"Sweep {sweep.name} on {sweep_root}"
    )
    if failed:
        raise SettingsFailed(
            f"sweep {sweep.name}: settings {sorted(failed)} failed (their errors are logged)", markdown
        )
    return {"table": fs.join(folder, "table.parquet"), "markdown": markdown}
