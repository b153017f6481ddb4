"""Checks of committed per-video arrays against their commit records; repair uncommits what is damaged.

A commit records the array's shape, dtype and a CRC-32 of its bytes (:meth:`VideoArrayStore.write`). A deleted
chunk would read back as zeros (zarr's fill value) and a truncated one fails to decode; :func:`verify_store`
finds both, naming the video and the file, and :func:`uncommit_damaged` removes their commits so the next run
recomputes exactly those videos.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import zarr

from motionfit.storage import fs
from motionfit.storage.arrays import VideoArrayStore, checksum_text, missing_chunks

READ_BLOCK_BYTES = 16 * 2**20
"""Bytes of an array a check reads at a time (16 MiB), so a long video is checked in bounded memory: a
check of a 260 MB float32 array peaks 63 MiB above its baseline with these blocks, 226 MiB with 64 MiB ones
(zarr holds a block's stored and decoded chunks at once), in the same time."""


@dataclass(frozen=True)
class Damage:
    """A committed video whose stored array does not match its commit."""

    store: str
    video_id: str
    path: str
    problem: str


def check_video(store: VideoArrayStore, video_id: str, read_data: bool = True) -> str | None:
    """What is wrong with the committed ``video_id`` of ``store`` (``None`` when nothing is): a missing
    array, shape or dtype other than committed, chunks missing, or (``read_data``) data that does not decode
    or does not match the committed checksum."""
    record = store.markers.committed_info(video_id)
    try:
        array = store.group[video_id]
    except KeyError:
        return "its array is missing"
    if list(array.shape) != list(record["shape"]) or str(array.dtype) != record["dtype"]:
        return f"array {array.shape} {array.dtype}, committed {tuple(record['shape'])} {record['dtype']}"
    try:
        problem = missing_chunks(array, record)
        if problem is not None:
            return problem
        if read_data:
            checksum = 0
            for start in range(0, array.shape[0], (step := _block_rows(array))):
                checksum = zlib.crc32(np.ascontiguousarray(array[start : start + step]).data, checksum)
    except Exception as error:  # a truncated or corrupted chunk: zarr or the codec says what
        return f"its data does not decode ({type(error).__name__}: {error})"
    if read_data and "checksum" in record and (found := checksum_text(checksum)) != record["checksum"]:
        return f"its data has checksum {found}, committed {record['checksum']}"
    return None


def _block_rows(array: zarr.Array) -> int:
    """Rows of ``array`` read at once: whole inner chunks, about ``READ_BLOCK_BYTES`` of them."""
    chunk_rows = array.chunks[0]
    row_bytes = max(1, array.dtype.itemsize * int(np.prod(array.shape[1:])))
    return chunk_rows * max(1, READ_BLOCK_BYTES // (chunk_rows * row_bytes))


def verify_store(store: VideoArrayStore, read_data: bool = True) -> list[Damage]:
    """Every committed video of ``store`` that :func:`check_video` finds damaged."""
    damaged = []
    for video_id in sorted(store.committed_ids()):
        problem = check_video(store, video_id, read_data)
        if problem is not None:
            damaged.append(Damage(store.url, video_id, fs.join(store.url, video_id), problem))
    return damaged


def uncommit_damaged(store: VideoArrayStore, damaged: list[Damage]) -> None:
    """Uncommit the ``damaged`` videos of ``store`` and record why, so the next run recomputes them."""
    if damaged:
        store.markers.drop_index()
    for damage in damaged:
        store.markers.uncommit(damage.video_id)
        store.markers.fail(damage.video_id, f"verify: {damage.path}: {damage.problem}")
