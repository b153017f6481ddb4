"""The per-video map used by every CPU stage: skip what is committed, isolate failures, report outcomes.

Code versions. Every stage module states a ``CODE_VERSION`` (an integer). It enters the stage's Prefect cache
key (``motionfit.flows.execution.fingerprint``) and, for the per-video stages, every video's recorded
:func:`inputs_key`; bump it when a change to the stage's algorithm alters what it writes, and the next run
recomputes that stage and, through their keys on its outputs, the stages that read them, nothing else.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from motionfit.storage.markers import StageMarkers, compact_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoOutcome:
    """What happened to one video in one stage: ``status`` is ``done``, ``skipped`` (already committed),
    ``excluded`` (the input cannot serve the run, now or as recorded before: ``reason`` says why) or
    ``failed`` (``error`` says why); ``seconds`` is the compute time spent on it in this call; ``record`` is
    the compact commit record of a committed video (for the stage's index)."""

    video_id: str
    status: str
    error: str | None = None
    seconds: float = 0.0
    record: dict[str, Any] | None = None
    reason: str | None = None


class VideoExcluded(ValueError):
    """Raised by a stage for a readable video that the run cannot use (fewer frames than its clips, smaller
    than ``decode.min_side``): a property of the input, recorded as excluded with this message as the reason,
    not as a failure, and not retried while the video's inputs key is unchanged."""


def window_length(
    memory_mib: float, bytes_per_frame: float, working_bytes: float, minimum: int, subject: str
) -> int:
    """Frames (or frame pairs) in a stage's window so that ``working_bytes`` (what the stage holds whatever
    the window) and ``bytes_per_frame`` for each frame of it fit in ``memory_mib``: a multiple of ``minimum``,
    and at least ``minimum``; a budget too small for that is logged as such, naming ``subject``."""
    fitting = int((memory_mib * 2**20 - working_bytes) // bytes_per_frame)
    if fitting < minimum:
        needed = (working_bytes + minimum * bytes_per_frame) / 2**20
        logger.warning(
            "%s needs about %.0f MiB for a window of %d, above runtime.video_memory_mib %s; it runs with it",
            subject,
            needed,
            minimum,
            memory_mib,
        )
        return minimum
    return fitting // minimum * minimum


def inputs_key(*parts: Any) -> str:
    """A short hash of what a video's output is computed from (stage config, source file, upstream commit)."""
    blob = json.dumps(
        [p.model_dump(mode="json", by_alias=True) if isinstance(p, BaseModel) else p for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.ESTALE})


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says the infrastructure failed (a network or object-store connection, a time-out,
    a busy or stale shared file), not the input: retrying the same work may succeed."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS


def map_videos(
    video_ids: Iterable[str],
    markers: StageMarkers,
    process: Callable[[str], None],
    key_of: Callable[[str], str] | None = None,
    exclusion_key_of: Callable[[str], str] | None = None,
    excluded_now: Callable[[dict[str, Any]], str | None] | None = None,
) -> list[VideoOutcome]:
    """Run ``process(video_id)`` for every video not yet committed in ``markers`` with its current inputs.

    ``process`` must write the video's outputs and commit it (``VideoArrayStore.write`` does both).
    ``key_of(video_id)`` (see :func:`inputs_key`) names the inputs; it is recorded with the commit, and a
    committed video whose recorded key differs (the stage config or an upstream output changed) is recomputed.
    A :class:`VideoExcluded` video is recorded as excluded with ``exclusion_key_of(video_id)`` (by default its
    inputs key; a stage whose exclusion depends on settings that do not change its output, such as decode's
    minimum frame count, names them there), and stays excluded without being processed again until that key
    changes. ``excluded_now(record)`` judges a committed video by its commit record under those settings (a
    reason, or None): one that no longer qualifies is uncommitted and excluded without being processed.
    An exception from one video is recorded as that video's failure (with the exception type and message) and
    the batch goes on, except a transient one (:func:`is_transient`), which fails the batch so it is retried.
    """
    outcomes = []
    for video_id in video_ids:
        key = key_of(video_id) if key_of else None
        record = markers.commit_record(video_id)  # one read per video: a batch never lists the stage
        judged = (exclusion_key_of or key_of)(video_id) if key_of else None
        if record is not None:
            reason = excluded_now(record) if excluded_now else None
            if reason is None and (key is None or record.get("inputs_key") == key):
                outcomes.append(VideoOutcome(video_id, "skipped", record=compact_record(record)))
                continue
            markers.uncommit(video_id)  # stale: downstream must not read it while it is recomputed
            if reason is not None:
                markers.exclude(video_id, reason, inputs_key=judged)
                outcomes.append(VideoOutcome(video_id, "excluded", reason=reason))
                continue
        exclusion = markers.exclusion_record(video_id) if judged is not None else None
        if exclusion is not None and exclusion.get("inputs_key") == judged:
            outcomes.append(VideoOutcome(video_id, "excluded", reason=exclusion["reason"]))
            continue
        start = time.perf_counter()
        try:
            with markers.recording(**({} if key is None else {"inputs_key": key})) as commits:
                process(video_id)
            record = commits.get(video_id) or markers.committed_info(video_id)
        except VideoExcluded as excluded:
            logger.info("%s excluded video %s: %s", markers.stage, video_id, excluded)
            markers.exclude(video_id, str(excluded), inputs_key=judged)
            seconds = time.perf_counter() - start
            outcomes.append(VideoOutcome(video_id, "excluded", seconds=seconds, reason=str(excluded)))
        except Exception as error:  # one bad video must not stop the batch; a failing store or network must
            if is_transient(error):
                raise
            message = f"{type(error).__name__}: {error}"
            logger.warning("%s failed for video %s: %s", markers.stage, video_id, message)
            markers.fail(video_id, message)
            outcomes.append(VideoOutcome(video_id, "failed", message, time.perf_counter() - start))
        else:
            seconds = time.perf_counter() - start
            outcomes.append(VideoOutcome(video_id, "done", None, seconds, compact_record(record)))
    return outcomes
