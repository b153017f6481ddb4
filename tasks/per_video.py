"""The per-video map used by every CPU stage: skip what is committed, isolate failures, report outcomes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from motionfit.storage.markers import StageMarkers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoOutcome:
    """What happened to one video in one stage: ``status`` is ``done``, ``skipped`` (already committed) or
    ``failed`` (``error`` says why); ``seconds`` is the compute time spent on it in this call."""

    video_id: str
    status: str
    error: str | None = None
    seconds: float = 0.0


def map_videos(
    video_ids: Iterable[str],
    markers: StageMarkers,
    process: Callable[[str], None],
) -> list[VideoOutcome]:
    """Run ``process(video_id)`` for every video not yet committed in ``markers``.

    ``process`` must write the video's outputs and commit it (``VideoArrayStore.write`` does both). An
    exception from one video is recorded as that video's failure (with the exception type and message) and the
    batch goes on; committed videos are never recomputed.
    """
    done = markers.committed_ids()
    outcomes = []
    for video_id in video_ids:
        if video_id in done:
            outcomes.append(VideoOutcome(video_id, "skipped"))
            continue
        start = time.perf_counter()
        try:
            process(video_id)
        except Exception as error:  # one bad video must not stop the batch
            message = f"{type(error).__name__}: {error}"
            logger.warning("%s failed for video %s: %s", markers.stage, video_id, message)
            markers.fail(video_id, message)
            outcomes.append(VideoOutcome(video_id, "failed", message, time.perf_counter() - start))
        else:
            outcomes.append(VideoOutcome(video_id, "done", None, time.perf_counter() - start))
    return outcomes
