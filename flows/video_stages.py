"""Running a per-video CPU stage as batches of Prefect tasks, with progress and manifest bookkeeping."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from prefect import Task, get_run_logger
from prefect.futures import as_completed
from prefect.states import Completed
from tqdm import tqdm

from motionfit.flows.artifacts import publish_progress, run_key
from motionfit.flows.execution import fingerprint, stage_task_options
from motionfit.runtime import RuntimeConfig
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import load_manifest, refresh_stage_status, save_manifest, status_column
from motionfit.tasks.per_video import VideoOutcome


class BatchFailedError(RuntimeError):
    """Some videos of a batch failed: the batch task fails (so its result is not cached and a re-run retries
    those videos); the committed ones stay committed and the rest of the stage goes on."""


def require_no_failures(stage: str, outcomes: list[VideoOutcome]) -> list[dict[str, Any]]:
    """``outcomes`` as plain records (a batch task's result, stored as JSON), or :class:`BatchFailedError`
    naming each failed video and its error."""
    failed = [f"{o.video_id}: {o.error}" for o in outcomes if o.status == "failed"]
    if failed:
        raise BatchFailedError(
            f"{stage}: {len(failed)} of {len(outcomes)} videos failed: " + "; ".join(failed)
        )
    return [asdict(outcome) for outcome in outcomes]


class TooManyFailuresError(ValueError):
    """More of a stage's videos failed than ``runtime.max_failed_fraction`` allows: the run stops (bad input,
    so a ``ValueError``, which the command reports without a traceback)."""


LISTED_FAILURES = 10
"""Failed videos named in the message of :class:`TooManyFailuresError` (the manifest has them all)."""


def require_failure_fraction(stage: str, layout: RunLayout, max_fraction: float) -> str | None:
    """Raise :class:`TooManyFailuresError` when more than ``max_fraction`` of the videos ``stage`` was asked
    to process failed (at ``ingest``: of the listed videos, those missing or unreadable), naming them and
    their reasons; otherwise return how many failed (``None`` when none did) and log it. Excluded videos (too
    short or too small for the run) are neither failures nor counted among the videos asked."""
    manifest = load_manifest(layout)
    if stage == "ingest":
        asked, failed = manifest, manifest[manifest["status"] != "ok"]
    else:
        column = status_column(stage)
        if column not in manifest:
            return None
        asked = manifest[manifest[column].notna() & manifest[column].ne("excluded")]
        failed = asked[asked[column] == "failed"]
    if len(failed) == 0:
        return None
    share = len(failed) / len(asked)
    summary = f"{stage}: {len(failed)} of {len(asked)} videos failed ({100 * share:.1f} %)"
    if share <= max_fraction:
        get_run_logger().warning(
            "%s, within runtime.max_failed_fraction %s; the run goes on", summary, max_fraction
        )
        return summary
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
    runtime: RuntimeConfig,
    code_version: int,
    videos_per_batch: int | None = None,
    task_args: tuple[Any, ...] = (),
) -> dict[str, int]:
    """Map ``batch_task(run_root, batch, config, batch_fingerprint, *task_args)`` over batches of ``items``
    (of ``videos_per_batch``, by default ``runtime.videos_per_batch``).

    ``items`` are what the batch task takes per video (ids, or (id, path) pairs) and ``video_ids`` their ids;
    ``item_fingerprint(item)`` describes an item's input content (an upstream commit's checksum, a file's size
    and mtime), so a batch's cache key changes exactly when its inputs or the stage's ``code_version`` do. A
    batch with failed videos fails (and is not cached); the others go on. A progress artifact
    ``<run>-<stage>-progress`` (and, on a terminal, a progress bar) follows the batches, and each batch is
    logged; the manifest's ``status_<stage>`` is refreshed from the commit markers, and the stage's index of
    commit records (:class:`StageMarkers`) is written from the batches' results. Returns counts of videos
    ``done``, ``excluded`` and ``failed`` in this stage (from the markers), of videos ``computed`` by this run
    and ``skipped`` as committed before, and of ``failed_batches`` and ``cached_batches``.
    """
    logger = get_run_logger()
    markers = layout.markers(stage)
    markers.drop_index()  # markers change from here on; the index is written anew when the stage ends
    committed = markers.committed_ids()  # one listing per stage
    committed_before = len(committed & set(video_ids))
    task = batch_task.with_options(**stage_task_options(layout, runtime))
    size = videos_per_batch or runtime.videos_per_batch
    groups = batches(list(items), size)
    # A batch with an uncommitted video (new, failed, or uncommitted by motionfit verify --repair) runs even
    # where its cached result says it is done; it skips its committed videos.
    incomplete = [not committed.issuperset(ids) for ids in batches(list(video_ids), size)]
    tasks = {False: task, True: task.with_options(refresh_cache=True)}
    futures = [
        tasks[refresh].submit(
            layout.root,
            group,
            config,
            fingerprint(stage, code_version, [item_fingerprint(i) for i in group]),
            *task_args,
        )
        for group, refresh in zip(groups, incomplete, strict=True)
    ]
    batch_sizes = {id(future): len(group) for future, group in zip(futures, groups, strict=True)}
    progress = publish_progress(
        run_key(layout.root, stage, "progress"), max(len(futures), 1), f"{stage}: batches finished (%)"
    )
    counts: Counter[str] = Counter()
    records: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(items), desc=stage, unit="video", disable=not sys.stderr.isatty())
    for finished, future in enumerate(as_completed(futures), start=1):
        result = future.result(raise_on_failure=False)
        position = f"{stage}: batch {finished}/{len(futures)}"
        if isinstance(result, BaseException):
            counts["failed_batches"] += 1
            logger.warning("%s: %s", position, result)
        elif future.state.name == "Cached":
            counts["cached_batches"] += 1
            logger.info("%s: cached, its %d videos were committed before", position, len(result))
        else:
            outcome = Counter(record["status"] for record in result)
            logger.info(
                "%s: %d done, %d already committed, %d excluded",
                position,
                outcome["done"],
                outcome["skipped"],
                outcome["excluded"],
            )
        if not isinstance(result, BaseException):
            records.update((r["video_id"], r["record"]) for r in result if r.get("record") is not None)
        progress.advance()
        bar.update(batch_sizes[id(future)])
    bar.close()
    manifest = refresh_stage_status(load_manifest(layout), markers, list(video_ids))
    save_manifest(layout, manifest)
    done = manifest.loc[manifest[status_column(stage)].eq("done"), "video_id"]
    unknown = [video_id for video_id in done if video_id not in records]  # failed batches, older results
    records.update(markers.compact_records(unknown))
    markers.write_index({video_id: records[video_id] for video_id in done if video_id in records})
    statuses = manifest.loc[manifest["video_id"].isin(set(video_ids)), f"status_{stage}"]
    summary = {
        "done": int((statuses == "done").sum()),
        "excluded": int((statuses == "excluded").sum()),
        "failed": int((statuses == "failed").sum()),
        "computed": int((statuses == "done").sum()) - committed_before,
        "skipped": committed_before,
        "failed_batches": counts["failed_batches"],
        "cached_batches": counts["cached_batches"],
    }
    logger.info(
        "%s: %d of %d videos done (%d computed now, %d committed before), %d excluded, %d failed; "
        "%d of %d batches cached",
        stage,
        summary["done"],
        len(video_ids),
        summary["computed"],
        summary["skipped"],
        summary["excluded"],
        summary["failed"],
        summary["cached_batches"],
        len(groups),
    )
    return summary


def stage_state(stage: str, summary: dict[str, int]) -> Any:
    """What a per-video stage's flow returns: its ``summary``, or, when videos failed, a Completed state
    named "Completed with failures" that carries it, so the UI shows the stage's run as such."""
    if not summary["failed"]:
        return summary
    message = f"{stage}: {summary['failed']} videos failed (motionfit status lists them)"
    return Completed(data=summary, name="Completed with failures", message=message)
