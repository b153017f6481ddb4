"""Per-video commit and failure markers: the only source of truth for what a stage has finished.

A video's array is written first and its commit marker last, so a reader that trusts only committed ids never
sees a half-written array; a crashed writer leaves no marker, and the video is recomputed (overwritten) on
retry.
Markers live outside the zarr stores, one small JSON file per video, so listing what is done is one ``ls``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from motionfit.storage import fs


@dataclass(frozen=True)
class StageMarkers:
    """Commit and failure markers of one stage under ``<run_root>/_markers/<stage>/``."""

    root: str
    stage: str

    @property
    def _committed_dir(self) -> str:
        return fs.join(self.root, "_markers", self.stage, "committed")

    @property
    def _failed_dir(self) -> str:
        return fs.join(self.root, "_markers", self.stage, "failed")

    def commit(self, video_id: str, info: dict[str, Any] | None = None) -> None:
        """Mark ``video_id`` finished (clearing an earlier failure)."""
        payload = {"video_id": video_id, "time": time.time(), **(info or {})}
        fs.write_json_atomic(fs.join(self._committed_dir, f"{video_id}.json"), payload)
        fs.remove(fs.join(self._failed_dir, f"{video_id}.json"))

    def annotate(self, video_id: str, **fields: Any) -> None:
        """Add ``fields`` to the commit record of the committed ``video_id``."""
        info = self.committed_info(video_id)
        fs.write_json_atomic(fs.join(self._committed_dir, f"{video_id}.json"), {**info, **fields})

    def fail(self, video_id: str, error: str) -> None:
        """Record that ``video_id`` failed with ``error`` (it stays uncommitted and is retried next run)."""
        payload = {"video_id": video_id, "time": time.time(), "error": error}
        fs.write_json_atomic(fs.join(self._failed_dir, f"{video_id}.json"), payload)

    def uncommit(self, video_id: str) -> None:
        fs.remove(fs.join(self._committed_dir, f"{video_id}.json"))

    def is_committed(self, video_id: str) -> bool:
        return fs.exists(fs.join(self._committed_dir, f"{video_id}.json"))

    def committed_ids(self) -> set[str]:
        return set(fs.list_names(self._committed_dir, ".json"))

    def committed_info(self, video_id: str) -> dict[str, Any]:
        return fs.read_json(fs.join(self._committed_dir, f"{video_id}.json"))

    def commit_record(self, video_id: str) -> dict[str, Any] | None:
        """The commit record of ``video_id``, or None when it is not committed: one read, no listing."""
        try:
            return self.committed_info(video_id)
        except FileNotFoundError:
            return None

    def identity(self, video_id: str) -> str | float | None:
        """What a downstream key records of this stage's output of ``video_id``: its checksum (the data
        itself, so an identical recomputation changes nothing downstream), or, for commits made before
        checksums, its time; ``None`` when it is not committed."""
        record = self.commit_record(video_id)
        return None if record is None else record.get("checksum", record["time"])

    def failures(self) -> dict[str, str]:
        """``{video_id: error}`` of the videos whose last attempt failed."""
        return {
            video_id: fs.read_json(fs.join(self._failed_dir, f"{video_id}.json"))["error"]
            for video_id in fs.list_names(self._failed_dir, ".json")
        }
