"""The run report: ``report.md`` with tables shaped like the papers' and the PNG plots, and the same tables as
plain aligned text for ``motionfit report RUN_ROOT``.

Tables are built from the long metrics table (``evaluate.read_metrics``). A metric measured under several
seeds is shown as ``mean ± std`` over seeds; a few-shot accuracy from one seed shows the std over probe
samples (``fewshot_<n>_std``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.tasks.evaluation.metrics import FEWSHOT_SHOTS, RETRIEVAL_KS, read_metrics
from motionfit.tasks.methods import METHODS, label, ordered

logger = logging.getLogger(__name__)

MISSING = "–"
LISTED_VIDEOS = 50
"""Missing, failed or excluded videos listed by name in the report and the run summary (``motionfit status``
lists them all)."""


def metric_decimals(metric: str) -> int:
    """Decimals shown for ``metric``: 3 for NMI, AMI and seconds, 2 for GMac and parameters, 1 for
    percentages."""
    if metric in ("cluster_nmi", "cluster_ami", "flow_seconds_per_clip", "network_seconds_per_clip"):
        return 3
    if metric in ("gmacs", "params_m"):
        return 2
    return 1


@dataclass(frozen=True)
class ReportContext:
    """What the report needs beside the metrics table.

    ``backbone``, ``frames`` and ``resolution`` describe the evaluated networks (``backbones`` overrides the
    backbone per method, e.g. a width-reduced CMPL auxiliary net, and ``inputs`` the input, "flow" or "RGB",
    that a method's entry would give, e.g. an appearance teacher); ``changed`` names the settings a method's
    label names that the run sets otherwise (``Method.label_settings``), whose methods' rows take their short
    label; ``split`` is the split whose results fill the accuracy tables; ``confused_pairs`` is
    ``evaluate.most_confused_pairs`` of the main method; ``plots`` maps a caption to a PNG URL (normally under
    ``layout.plots``), embedded by its path relative to ``report.md``; ``methods``, when given, are the run's
    methods: rows of other methods (left in the metrics table by an earlier run with another method list) stay
    out of the tables. ``test_videos`` counts the test videos each method was scored on, of the
    ``listed_test_videos`` the data set lists. ``left_out`` holds the first :data:`LISTED_VIDEOS` rows of
    ``storage.manifest.left_out_videos`` (missing, failed and excluded videos with their reasons) and
    ``n_left_out`` how many there are in all.
    """

    title: str = "MotionFit run report"
    dataset: str = ""
    backbone: str = "R(2+1)D-18"
    frames: int = 16
    resolution: int = 112
    split: str = "test"
    backbones: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    changed: tuple[str, ...] = ()
    confused_pairs: pd.DataFrame | None = None
    confused_method: str = "motionfit"
    plots: Mapping[str, str] = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    test_videos: Mapping[str, int] = field(default_factory=dict)
    listed_test_videos: int = 0
    left_out: tuple[Mapping[str, str], ...] = ()
    n_left_out: int = 0


def summarise_seeds(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (over seeds, ddof 0) and seed count per ``method, metric, split``."""
    grouped = metrics.groupby(["method", "metric", "split"], sort=False)["value"]
    summary = grouped.agg(mean="mean", std=lambda v: float(np.std(v)), n_seeds="count")
    return summary.reset_index()


def _cell(summary: pd.DataFrame, method: str, metric: str, split: str) -> str:
    row = _summary_row(summary, method, metric, split)
    if row is None:
        return MISSING
    decimals = metric_decimals(metric)
    std = row["std"] if row["n_seeds"] > 1 else None
    if std is None and metric.startswith("fewshot_"):
        probe = _summary_row(summary, method, f"{metric}_std", split)
        std = None if probe is None else probe["mean"]
    text = f"{row['mean']:.{decimals}f}"
    return text if std is None or np.isnan(std) else f"{text} ± {std:.{decimals}f}"


def _summary_row(summary: pd.DataFrame, method: str, metric: str, split: str) -> pd.Series | None:
    rows = summary[
        (summary["method"] == method) & (summary["metric"] == metric) & (summary["split"] == split)
    ]
    return None if rows.empty else rows.iloc[0]


def _metric_table(
    summary: pd.DataFrame,
    labels: Mapping[str, str],
    columns: Mapping[str, str],
    split: str | None = None,
    leading: Mapping[str, Mapping[str, str]] | None = None,
    split_column: bool = False,
) -> pd.DataFrame:
    """One row per method (and split) having any of ``columns`` (metric -> header), named by ``labels``.

    ``split`` keeps that split only; otherwise every split gets its own row, named in a ``Split`` column when
    ``split_column``. ``leading`` columns (header -> method -> text) come first.
    """
    leading = leading or {}
    present = summary[summary["metric"].isin(list(columns))]
    if split is not None:
        present = present[present["split"] == split]
    rows = []
    for method in ordered(present["method"].unique().tolist()):
        for row_split in sorted(present.loc[present["method"] == method, "split"].unique()):
            row = {"Method": labels.get(method, method)}
            row.update({header: values.get(method, "") for header, values in leading.items()})
            if split_column:
                row["Split"] = row_split
            row.update(
                {header: _cell(summary, method, metric, row_split) for metric, header in columns.items()}
            )
            rows.append(row)
    split_header = ["Split"] if split_column else []
    return pd.DataFrame(rows, columns=["Method", *leading, *split_header, *columns.values()])


def _ks_present(summary: pd.DataFrame, prefix: str, ordered: Sequence[object]) -> list[str]:
    names = set(summary["metric"])
    known = [f"{prefix}{k}" for k in ordered if f"{prefix}{k}" in names]
    extra = sorted(n for n in names if n.startswith(prefix) and n not in known and not n.endswith("_std"))
    return known + extra


def _shots_header(metric: str) -> str:
    shots = metric.removeprefix("fewshot_")
    return "All labels" if shots == "all" else f"{shots}-shot"


def _top1_columns(summary: pd.DataFrame, split: str) -> dict[str, str]:
    """Top-1, and "% sup." only where the supervised bound is the best row (a percentage of a weaker
    "bound" says nothing)."""
    top1 = summary[(summary["metric"] == "top1") & (summary["split"] == split)].set_index("method")["mean"]
    if "supervised" in top1 and top1["supervised"] >= top1.max():
        return {"top1": "Top-1 (%)", "pct_sup_top1": "% sup."}
    return {"top1": "Top-1 (%)"}


def report_tables(
    metrics: pd.DataFrame, context: ReportContext | None = None
) -> list[tuple[str, pd.DataFrame]]:
    """The report's tables as ``(title, table of formatted strings)``; tables without metrics are left out."""
    context = context or ReportContext()
    if context.methods:  # rows of no method (IDT cluster quality) always stay
        metrics = metrics[metrics["method"].isin(context.methods) | ~metrics["method"].isin(METHODS)]
    summary = summarise_seeds(metrics)
    methods = ordered(summary["method"].unique().tolist())
    labels = {m: label(m, context.changed) for m in methods}
    setup = {
        "Input": {
            m: context.inputs.get(m, "flow" if m in METHODS and METHODS[m].modality == "flow" else "RGB")
            for m in methods
        },
        "Backbone": {m: context.backbones.get(m, context.backbone) for m in methods},
        "Frames": {m: str(context.frames) for m in methods},
        "Res.": {m: str(context.resolution) for m in methods},
    }
    retrieval = _ks_present(summary, "r@", RETRIEVAL_KS)
    fewshot = _ks_present(summary, "fewshot_", FEWSHOT_SHOTS)
    tables = [
        (
            f"Target top-1 ({context.split})",
            _metric_table(summary, labels, _top1_columns(summary, context.split), context.split, setup),
        ),
        (
            f"Video retrieval, {context.split} queries training videos (R@k, %)",
            _metric_table(summary, labels, {m: m.upper() for m in retrieval}, context.split),
        ),
        (
            "Few-shot linear probe on frozen features (top-1, %)",
            _metric_table(summary, labels, {m: _shots_header(m) for m in fewshot}, context.split),
        ),
        (
            "Inference cost per clip",
            _metric_table(
                summary,
                labels,
                {
                    "params_m": "Params (M)",
                    "gmacs": "GMac",
                    "network_seconds_per_clip": "Network s/clip",
                    "flow_seconds_per_clip": "TV-L1 s/clip",
                },
                leading={"Input": setup["Input"]},
            ),
        ),
        (
            "Training budget (optimiser steps of the student or teacher, plus fine-tuning)",
            _metric_table(summary, labels, {"train_steps": "Steps"}, context.split),
        ),
        (
            "Cluster quality against true labels (mean ± std over k-means runs)",
            _metric_table(
                summary,
                labels,
                {"cluster_nmi": "NMI", "cluster_ami": "AMI", "cluster_purity": "Purity (%)"},
                split_column=True,
            ),
        ),
        (
            "Pseudo-label accuracy (%)",
            _metric_table(
                summary,
                labels,
                {"pseudo_label_acc": "Accuracy (%)", "pseudo_label_mask_rate": "Confident (%)"},
                split_column=True,
            ),
        ),
    ]
    return [(title, table) for title, table in tables if not table.empty]


def _escape(cell: object) -> str:
    return str(cell).replace("|", "\\|")


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``table``'s cells as text."""
    header = "| " + " | ".join(_escape(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def text_table(table: pd.DataFrame) -> str:
    """``table`` as plain text with columns padded to their widest cell (first column left-aligned)."""
    cells = [
        [str(c) for c in table.columns],
        *[[str(c) for c in row] for row in table.itertuples(index=False)],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *(line(r) for r in cells[1:])])


def _confused_table(pairs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Class A": pairs["class_a"],
            "Class B": pairs["class_b"],
            "A as B": pairs["a_as_b"],
            "B as A": pairs["b_as_a"],
            "Confusions": pairs["confusions"],
            "Rate (%)": [f"{r:.1f}" for r in pairs["rate"]],
        }
    )


def _relative_to(url: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return url[len(prefix) :] if url.startswith(prefix) else url


def scored_test_videos(context: ReportContext) -> str:
    """The sentence saying how many of the listed test videos the tables score ('' when not known)."""
    listed = context.listed_test_videos
    counts = set(context.test_videos.values())
    if not listed or not counts:
        return ""
    if counts == {listed}:
        return f"All {listed} listed test videos were scored."
    if len(counts) == 1:
        scored = f"{counts.pop()} of {listed} listed test videos were scored"
    else:
        per_method = ", ".join(f"{label(m, context.changed)} {n}" for m, n in context.test_videos.items())
        scored = f"Of {listed} listed test videos, these were scored: {per_method}"
    return f"{scored}; the others are missing, failed or were excluded (listed below)."


def left_out_section(left_out: pd.DataFrame, run_root: str, total: int | None = None) -> list[str]:
    """Markdown lines of the section listing the videos the run could not use (``left_out``: columns of
    ``storage.manifest.left_out_videos``, of ``total`` in all when it holds only the first), at most
    :data:`LISTED_VIDEOS` of them; no lines when there are none."""
    total = len(left_out) if total is None else total
    if not total:
        return []
    lines = [
        f"## Missing, failed and excluded videos ({total})",
        "",
        markdown_table(left_out.head(LISTED_VIDEOS)),
    ]
    more = total - min(len(left_out), LISTED_VIDEOS)
    if more > 0:
        command = f"motionfit status {run_root}".rstrip()
        lines += ["", f"... and {more} more; `{command}` lists them."]
    return [*lines, ""]


def render_report(metrics: pd.DataFrame, context: ReportContext, root: str = "") -> str:
    """The markdown of ``report.md``; plot paths under ``root`` are written relative to it."""
    lines = [f"# {context.title}", ""]
    if context.dataset:
        lines += [f"Target data set: **{context.dataset}**.", ""]
    scored = scored_test_videos(context)
    if scored:
        lines += [scored, ""]
    tables = report_tables(metrics, context)
    if not tables:
        lines += ["No metrics have been recorded yet.", ""]
    for title, table in tables:
        lines += [f"## {title}", "", markdown_table(table), ""]
    if context.confused_pairs is not None and not context.confused_pairs.empty:
        name = label(context.confused_method, context.changed)
        lines += [
            f"## Most confused class pairs ({name})",
            "",
            markdown_table(_confused_table(context.confused_pairs)),
            "",
        ]
    lines += left_out_section(pd.DataFrame(list(context.left_out)), root, context.n_left_out)
    if context.plots:
        lines += ["## Plots", ""]
        for caption, url in context.plots.items():
            lines += [f"### {caption}", "", f"![{caption}]({_relative_to(url, root)})", ""]
    return "\n".join(lines)


"""The report's network description, kept beside report.md so ``motionfit report`` shows the same tables."""
CONTEXT_FIELDS = (
    "title",
    "dataset",
    "backbone",
    "frames",
    "resolution",
    "split",
    "backbones",
    "inputs",
    "changed",
    "confused_method",
    "methods",
    "test_videos",
    "listed_test_videos",
    "left_out",
    "n_left_out",
)


def write_report(layout: RunLayout, context: ReportContext) -> str:
    """Write ``report.md`` from the run's metrics table and ``context``; returns the markdown."""
    markdown = render_report(read_metrics(layout), context, layout.root)
    fs.write_bytes_atomic(layout.report, markdown.encode("utf-8"))
    description = {name: getattr(context, name) for name in CONTEXT_FIELDS}
    fs.write_json_atomic(layout.report_context, description)
    logger.info("wrote report %s", layout.report)
    return markdown


def format_terminal_tables(metrics: pd.DataFrame, context: ReportContext | None = None) -> str:
    """The report's tables as plain aligned text, each under its underlined title."""
    blocks = [
        f"{title}\n{'=' * len(title)}\n{text_table(table)}"
        for title, table in report_tables(metrics, context)
    ]
    if not blocks:
        return "No metrics have been recorded yet."
    if context is not None and context.n_left_out:
        title = f"Missing, failed and excluded videos ({context.n_left_out})"
        blocks.append(f"{title}\n{'=' * len(title)}\n{text_table(pd.DataFrame(list(context.left_out)))}")
    scored = scored_test_videos(context) if context is not None else ""
    return "\n\n".join([scored, *blocks] if scored else blocks)


def render_report_for_terminal(run_root: str) -> str:
    """``motionfit report RUN_ROOT``: the tables of the run's ``metrics.parquet`` as text."""
    layout = RunLayout.at(run_root)
    if not fs.exists(layout.metrics):
        raise FileNotFoundError(
            f"run {layout.root} has no metrics table ({layout.metrics}); run the evaluate stage"
        )
    context_url = layout.report_context
    context = ReportContext(**fs.read_json(context_url)) if fs.exists(context_url) else None
    return format_terminal_tables(read_metrics(layout), context)
