"""Per-video commit, exclusion and failure markers: the only source of truth for what a stage has finished.

A video's array is written first and its commit marker last, so a reader that trusts only committed ids never
sees a half-written array; a crashed writer leaves no marker, and the video is recomputed (overwritten) on
retry.
Markers live outside the zarr stores, one small JSON file per video, so listing what is done is one ``ls``.

A stage's index (``index.parquet`` beside the markers) holds every committed video's compact record (its
identity and shape), written by the stage's run when it ends and removed when the next run of the stage (or a
repair) starts changing markers: downstream stages read one file for the fingerprints of N videos instead of N
markers (one GET each on an object store). Where the index is absent or lacks a video, its marker is read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pandas as pd

from motionfit.storage import fs
from motionfit.storage.tables import read_table, write_table


def identity_of(record: Mapping[str, Any]) -> str | float:
    """What a downstream key records of a committed output: its checksum (the data itself, so an identical
    recomputation changes nothing downstream), or, for commits made before checksums, its time."""
    return record.get("checksum", record["time"])


def compact_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a commit record the stage index keeps: identity, shape and the ``frames`` count."""
    compact = {"identity": identity_of(record), "shape": record.get("shape")}
    if "frames" in record:
        compact["frames"] = record["frames"]
    return compact


@dataclass(frozen=True)
class _Recording:
    stage: tuple[str, str]
    fields: dict[str, Any]
    records: dict[str, dict[str, Any]]


_RECORDING: ContextVar[_Recording | None] = ContextVar("motionfit_recording", default=None)
"""The :meth:`StageMarkers.recording` block the current thread is in."""


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

    @property
    def _excluded_dir(self) -> str:
        return fs.join(self.root, "_markers", self.stage, "excluded")

    def commit(self, video_id: str, info: dict[str, Any] | None = None) -> None:
        """Mark ``video_id`` finished (clearing an earlier failure or exclusion), with the fields of an
        enclosing :meth:`recording` of this stage."""
        recording = _RECORDING.get()
        mine = recording is not None and recording.stage == (self.root, self.stage)
        extra = recording.fields if mine else {}
        payload = {"video_id": video_id, "time": time.time(), **(info or {}), **extra}
        fs.write_json_atomic(fs.join(self._committed_dir, f"{video_id}.json"), payload)
        fs.remove_file(fs.join(self._failed_dir, f"{video_id}.json"))
        fs.remove_file(fs.join(self._excluded_dir, f"{video_id}.json"))
        if mine:
            recording.records[video_id] = payload

    @contextmanager
    def recording(self, **fields: Any) -> Iterator[dict[str, dict[str, Any]]]:
        """Within the block, this stage's commits also record ``fields`` (in the same write); yields the
        ``{video_id: record}`` of the commits made in it."""
        recording = _Recording((self.root, self.stage), fields, {})
        token = _RECORDING.set(recording)
        try:
            yield recording.records
        finally:
            _RECORDING.reset(token)

    def fail(self, video_id: str, error: str) -> None:
        """Record that ``video_id`` failed with ``error`` (it stays uncommitted and is retried next run)."""
        payload = {"video_id": video_id, "time": time.time(), "error": error}
        fs.write_json_atomic(fs.join(self._failed_dir, f"{video_id}.json"), payload)
        fs.remove_file(fs.join(self._excluded_dir, f"{video_id}.json"))

    def exclude(self, video_id: str, reason: str, inputs_key: str | None = None) -> None:
        """Record that ``video_id`` cannot serve the run, and why (clearing an earlier failure); with the
        ``inputs_key`` it was judged on, so a changed file or config judges it again."""
        payload = {"video_id": video_id, "time": time.time(), "reason": reason, "inputs_key": inputs_key}
        fs.write_json_atomic(fs.join(self._excluded_dir, f"{video_id}.json"), payload)
        fs.remove_file(fs.join(self._failed_dir, f"{video_id}.json"))

    def exclusion_record(self, video_id: str) -> dict[str, Any] | None:
        """The exclusion record of ``video_id`` (``reason``, ``inputs_key``), or None; one read, no list."""
        try:
            return fs.read_json(fs.join(self._excluded_dir, f"{video_id}.json"))
        except FileNotFoundError:
            return None

    def exclusions(self) -> dict[str, str]:
        """``{video_id: reason}`` of the excluded videos."""
        return {
            video_id: fs.read_json(fs.join(self._excluded_dir, f"{video_id}.json"))["reason"]
            for video_id in fs.list_names(self._excluded_dir, ".json")
        }

    def uncommit(self, video_id: str) -> None:
        fs.remove_file(fs.join(self._committed_dir, f"{video_id}.json"))

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
        """:func:`identity_of` this stage's output of ``video_id``; ``None`` when it is not committed."""
        record = self.commit_record(video_id)
        return None if record is None else identity_of(record)

    @property
    def index_url(self) -> str:
        return fs.join(self.root, "_markers", self.stage, "index.parquet")

    def write_index(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Record ``{video_id: compact_record}`` of every committed video as the stage's index."""
        rows = [{"video_id": v, "record": json.dumps(dict(r))} for v, r in sorted(records.items())]
        write_table(self.index_url, pd.DataFrame(rows, columns=["video_id", "record"]))

    def drop_index(self) -> None:
        """Remove the index before markers change (a stage run, a repair), so it is never stale."""
        fs.remove_file(self.index_url)

    def compact_records(self, video_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:func:`compact_record` of each committed video of ``video_ids``: one read of the index, and one
        marker read per video it lacks (uncommitted videos are left out)."""
        try:
            index = read_table(self.index_url)
        except FileNotFoundError:
            index = pd.DataFrame(columns=["video_id", "record"])
        known = dict(zip(index["video_id"], index["record"], strict=True))
        records = {}
        for video_id in video_ids:
            if video_id in known:
                records[video_id] = json.loads(known[video_id])
            elif (record := self.commit_record(video_id)) is not None:
                records[video_id] = compact_record(record)
        return records

    def identities(self, video_ids: Iterable[str]) -> dict[str, str | float | None]:
        """:meth:`identity` of each of ``video_ids`` (``None`` where uncommitted), from the index."""
        video_ids = list(video_ids)
        records = self.compact_records(video_ids)
        return {v: records[v]["identity"] if v in records else None for v in video_ids}

    def failures(self) -> dict[str, str]:
        """``{video_id: error}`` of the videos whose last attempt failed."""
        return {
            video_id: fs.read_json(fs.join(self._failed_dir, f"{video_id}.json"))["error"]
            for video_id in fs.list_names(self._failed_dir, ".json")
        }
