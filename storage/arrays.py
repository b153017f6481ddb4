"""Per-video arrays in zarr v3 stores (``frames.zarr``, ``flow.zarr``, ``idt.zarr``).

Each video is one array named by its ``video_id``, stored as a single shard whose inner chunks hold
``chunk_frames`` frames (rows for IDT): a random 16-frame clip then reads one or two inner chunks, and a video
is one object on disk instead of thousands (measured: 2 ms per random 16-frame clip of flow with blosc zstd
3; inner chunks of one frame cost over 6 ms).
Writes go through :meth:`VideoArrayStore.write`, which commits the video via :class:`StageMarkers` only after
the array is complete.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle
from zarr.errors import ContainsGroupError

from motionfit.storage import fs
from motionfit.storage.markers import StageMarkers

OPEN_ARRAYS = 4096
"""Array handles a store keeps open for repeated reads."""


class VideoNotCommittedError(KeyError):
    """Raised when a reader asks for a video that its stage has not committed."""


class DamagedVideoError(OSError):
    """A committed video's stored array is incomplete or does not decode (a chunk deleted or truncated)."""


def missing_chunks(array: zarr.Array, record: dict[str, Any]) -> str | None:
    """What a committed array lacks, e.g. ``2 of its 2 chunks are missing`` (zarr would read them as zeros),
    or ``None``. Commits without a checksum predate storing every chunk (all-zero chunks were skipped then),
    so only newer commits can tell damage apart."""
    missing = array.nchunks - array.nchunks_initialized
    return (
        f"{missing} of its {array.nchunks} chunks are missing" if missing and "checksum" in record else None
    )


def array_checksum(array: np.ndarray) -> str:
    """The CRC-32 of an array's C-order bytes, as its commit records it: ``crc32:<8 hex digits>``."""
    return f"crc32:{zlib.crc32(np.ascontiguousarray(array).data) & 0xFFFFFFFF:08x}"


@dataclass
class VideoArrayStore:
    """One zarr group of per-video arrays plus the commit markers of the stage that writes it.

    ``url``: the group (``<run_root>/frames.zarr``); ``markers``: the writing stage's markers;
    ``chunk_frames``: inner chunk length along axis 0; ``cname`` and ``clevel``: the blosc compressor
    (``cname`` None stores raw bytes); ``dimension_names``: zarr's names of the arrays' axes (xarray reads
    them), None to leave them unnamed.
    """

    url: str
    markers: StageMarkers
    chunk_frames: int = 16
    cname: str | None = "zstd"
    clevel: int = 3
    dimension_names: tuple[str, ...] | None = None
    _group: Any = field(default=None, init=False, repr=False)
    _opened: dict[str, zarr.Array] = field(default_factory=dict, init=False, repr=False)

    @property
    def group(self) -> zarr.Group:
        """The store's zarr group, created on first use; safe when several workers create it at once."""
        if self._group is None:
            try:
                self._group = zarr.open_group(store=fs.zarr_store(self.url), mode="a", zarr_format=3)
            except ContainsGroupError:  # another worker created it between our check and our write
                self._group = zarr.open_group(store=fs.zarr_store(self.url), mode="r+", zarr_format=3)
        return self._group

    def _codec(self, dtype: np.dtype) -> BloscCodec | None:
        if self.cname is None:
            return None
        shuffle = BloscShuffle.bitshuffle if dtype.itemsize == 1 else BloscShuffle.shuffle
        return BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=shuffle, typesize=dtype.itemsize)

    def _dimension_names(self, ndim: int) -> tuple[str, ...] | None:
        if self.dimension_names is None:
            return None
        if len(self.dimension_names) != ndim:
            raise ValueError(f"{self.url} holds {len(self.dimension_names)}-d arrays, got a {ndim}-d one")
        return self.dimension_names

    def write(self, video_id: str, array: np.ndarray, attrs: dict[str, Any] | None = None) -> None:
        """Store ``array`` ([T, ...], any dtype) as ``video_id`` and commit it; replaces an earlier copy."""
        array = np.ascontiguousarray(array)
        if array.ndim < 1:
            raise ValueError(f"video {video_id!r}: expected an array with a leading frame axis, got a scalar")
        n_rows = array.shape[0]
        chunk_rows = max(1, min(self.chunk_frames, n_rows)) if n_rows else 1
        chunks = (chunk_rows, *array.shape[1:]) if array.ndim > 1 else (chunk_rows,)
        shard_rows = max(chunk_rows, math.ceil(max(n_rows, 1) / chunk_rows) * chunk_rows)
        self.markers.uncommit(video_id)
        self._opened.pop(video_id, None)
        target = self.group.create_array(
            name=video_id,
            shape=array.shape,
            dtype=array.dtype,
            chunks=chunks,
            shards=(shard_rows, *chunks[1:]),
            compressors=self._codec(array.dtype),
            dimension_names=self._dimension_names(array.ndim),
            overwrite=True,
            config={"write_empty_chunks": True},  # every chunk stored: a missing one is damage, not zeros
        )
        if n_rows:
            target[...] = array
        info = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "checksum": array_checksum(array),
            **(attrs or {}),
        }
        target.attrs.update(info)
        self.markers.commit(video_id, info)

    def _open(self, video_id: str) -> zarr.Array:
        """The committed array of ``video_id``. Handles are kept (up to OPEN_ARRAYS), so a training loader's
        many clip reads of one video skip the marker check and the metadata read."""
        array = self._opened.get(video_id)
        if array is None:
            record = self.markers.commit_record(video_id)
            if record is None:
                raise VideoNotCommittedError(f"video {video_id!r} is not committed in {self.url}")
            if len(self._opened) >= OPEN_ARRAYS:
                self._opened.clear()
            try:
                array = self.group[video_id]
                problem = missing_chunks(array, record)
            except Exception as error:  # its metadata or a shard index is gone or torn
                raise self._damaged(video_id, f"{type(error).__name__}: {error}") from error
            if problem is not None:
                raise self._damaged(video_id, problem)
            self._opened[video_id] = array
        return array

    def _damaged(self, video_id: str, problem: str) -> DamagedVideoError:
        root = self.url.rsplit("/", 1)[0]
        return DamagedVideoError(
            f"committed video {video_id!r} is damaged in {self.url}/{video_id}: {problem} "
            f"(motionfit verify {root} --repair uncommits it, and the next run recomputes it)"
        )

    def _read(self, video_id: str, rows: slice) -> np.ndarray:
        array = self._open(video_id)
        try:
            return array[rows]
        except Exception as error:  # a truncated or corrupted chunk
            raise self._damaged(video_id, f"{type(error).__name__}: {error}") from error

    def arrays(self, video_ids: Iterable[str]) -> Mapping[str, zarr.Array]:
        """The committed arrays of ``video_ids`` by id, each opened when it is first looked up: an index
        into one reads only the chunks holding those rows."""
        return _LazyArrays(self, tuple(video_ids))

    def read(self, video_id: str) -> np.ndarray:
        """The whole committed array of ``video_id``."""
        return self._read(video_id, slice(None))

    def read_range(self, video_id: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (frames of a clip) of ``video_id``."""
        return self._read(video_id, slice(start, stop))

    def shape(self, video_id: str) -> tuple[int, ...]:
        return tuple(self.markers.committed_info(video_id)["shape"])

    def attrs(self, video_id: str) -> dict[str, Any]:
        return dict(self.markers.committed_info(video_id))

    def committed_ids(self) -> set[str]:
        return self.markers.committed_ids()

    def is_committed(self, video_id: str) -> bool:
        return self.markers.is_committed(video_id)


@dataclass(frozen=True)
class _LazyArrays(Mapping[str, zarr.Array]):
    """What :meth:`VideoArrayStore.arrays` returns."""

    store: VideoArrayStore
    video_ids: tuple[str, ...]
    members: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", frozenset(self.video_ids))

    def __getitem__(self, video_id: str) -> zarr.Array:
        if video_id not in self.members:
            raise KeyError(video_id)
        return self.store._open(video_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.video_ids)

    def __len__(self) -> int:
        return len(self.video_ids)
