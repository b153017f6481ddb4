"""Running a per-video CPU stage as batches of Prefect tasks, with progress and manifest bookkeeping."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from prefect import Task, get_run_logger
from prefect.futures import as_completed
from tqdm import tqdm

from motionfit.flows.artifacts import publish_progress
from motionfit.flows.execution import fingerprint, stage_task_options
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import load_manifest, refresh_stage_status, save_manifest, status_column
from motionfit.tasks.per_video import VideoOutcome


class BatchFailedError(RuntimeError):
    """Some videos of a batch failed: the batch task fails (so its result is not cached and a re-run retries
    those videos); the committed ones stay committed and the rest of the stage goes on."""


def require_no_failures(stage: str, outcomes: list[VideoOutcome]) -> list[VideoOutcome]:
    """``outcomes`` unchanged, or :class:`BatchFailedError` naming each failed video and its error."""
    failed = [f"{o.video_id}: {o.error}" for o in outcomes if o.status == "failed"]
    if failed:
        raise BatchFailedError(
            f"{stage}: {len(failed)} of {len(outcomes)} videos failed: " + "; ".join(failed)
        )
    return outcomes


class TooManyFailuresError(ValueError):
    """More of a stage's videos failed than ``runtime.max_failed_fraction`` allows: the run stops (bad input,
    so a ``ValueError``, which the command reports without a traceback)."""


LISTED_FAILURES = 10
"""Failed videos named in the message of :class:`TooManyFailuresError` (the manifest has them all)."""


def require_failure_fraction(stage: str, layout: RunLayout, max_fraction: float) -> None:
    """Raise :class:`TooManyFailuresError` when more than ``max_fraction`` of the videos ``stage`` was asked
    to process failed (at ``ingest``: of the listed videos, those missing or unreadable), naming them and
    their reasons; otherwise log how many failed."""
    manifest = load_manifest(layout)
    if stage == "ingest":
        asked, failed = manifest, manifest[manifest["status"] != "ok"]
    else:
        column = status_column(stage)
        if column not in manifest:
            return
        asked = manifest[manifest[column].notna()]
        failed = asked[asked[column] == "failed"]
    if len(failed) == 0:
        return
    share = len(failed) / len(asked)
    summary = f"{stage}: {len(failed)} of {len(asked)} videos failed ({100 * share:.1f} %)"
    if share <= max_fraction:
        get_run_logger().warning(
            "%s, within runtime.max_failed_fraction %s; the run goes on", summary, max_fraction
        )
        return
    listed = "\n".join(f"- {row.video_id}: {row.error}" for row in failed.head(LISTED_FAILURES).itertuples())
    more = (
        f"\n... and {len(failed) - LISTED_FAILURES} more (motionfit status)"
        if len(failed) > LISTED_FAILURES
        else ""
    )
    raise TooManyFailuresError(
        f"{summary}, above runtime.max_failed_fraction {max_fraction}: the run stops (committed videos are "
        f"kept; fix or remove these and re-run):\n{listed}{more}"
    )


def batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def run_video_stage(
    stage: str,
    batch_task: Task,
    layout: RunLayout,
    items: Sequence[Any],
    video_ids: Sequence[str],
    item_fingerprint: Callable[[Any], Any],
    config: Any,
    videos_per_batch: int,
    code_version: int,
) -> dict[str, int]:
    """Map ``batch_task(run_root, batch, config, batch_fingerprint)`` over batches of ``items``.

    ``items`` are what the batch task takes per video (ids, or (id, path) pairs) and ``video_ids`` their ids;
    ``item_fingerprint(item)`` describes an item's input content (an upstream commit time, a file's size and
    mtime), so a batch's cache key changes exactly when its inputs or the stage's ``code_version`` do. A
    batch with failed videos fails (and is not cached); the others go on. A progress artifact
    ``<stage>-progress`` (and, on a terminal, a progress bar) follows the batches; the manifest's
    ``status_<stage>`` is refreshed from the commit markers. Returns counts of videos ``done`` and ``failed``
    in this stage (from the markers) and of ``failed_batches``.
    """
    logger = get_run_logger()
    task = batch_task.with_options(**stage_task_options(layout))
    groups = batches(list(items), videos_per_batch)
    key = f"{stage.replace('_', '-')}-progress"
    futures = [
        task.submit(
            layout.root, group, config, fingerprint(stage, code_version, [item_fingerprint(i) for i in group])
        )
        for group in groups
    ]
    batch_sizes = {id(future): len(group) for future, group in zip(futures, groups, strict=True)}
    progress = publish_progress(key, max(len(futures), 1), f"{stage}: batches finished (%)")
    failed_batches = 0
    bar = tqdm(total=len(items), desc=stage, unit="video", disable=not sys.stderr.isatty())
    for future in as_completed(futures):
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            failed_batches += 1
            logger.warning("%s", result)
        progress.advance()
        bar.update(batch_sizes[id(future)])
    bar.close()
    manifest = refresh_stage_status(load_manifest(layout), layout.markers(stage), list(video_ids))
    save_manifest(layout, manifest)
    statuses = manifest.loc[manifest["video_id"].isin(set(video_ids)), f"status_{stage}"]
    summary = {
        "done": int((statuses == "done").sum()),
        "failed": int((statuses == "failed").sum()),
        "failed_batches": failed_batches,
    }
    logger.info("%s: %s over %d batches", stage, summary, len(groups))
    return summary
