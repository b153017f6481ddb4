"""Per-video arrays in zarr v3 stores (``frames.zarr``, ``flow.zarr``, ``idt.zarr``).

Each video is one array named by its ``video_id``, stored as a single shard whose inner chunks hold
``chunk_frames`` frames (rows for IDT): a random 16-frame clip then reads one or two inner chunks, and a video
is one object on disk instead of thousands (measured: 2 ms per random 16-frame clip of flow with blosc zstd
3; inner chunks of one frame cost over 6 ms).
Writes go through :meth:`VideoArrayStore.stream` (or :meth:`VideoArrayStore.write` of a whole array), which
commits the video via :class:`StageMarkers` only after the array is complete. A stream encodes each inner
chunk as soon as its rows are in and appends it to the video's shard, then writes the shard's index and the
array's metadata last, so a writer holds one chunk of rows however long the video is; the bytes are those
zarr writes for the whole array at once (zarr itself would rewrite the whole shard for every partial write).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import numpy as np
import zarr
from numpy.typing import DTypeLike
from zarr.codecs import BloscCodec, BloscShuffle
from zarr.errors import ContainsGroupError
from zarr.storage import MemoryStore

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
    return checksum_text(zlib.crc32(np.ascontiguousarray(array).data))


def checksum_text(crc32: int) -> str:
    """A CRC-32 (``zlib.crc32``, also when computed block by block) as a commit records it."""
    return f"crc32:{crc32 & 0xFFFFFFFF:08x}"


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
        array = np.asarray(array)
        if array.ndim < 1:
            raise ValueError(f"video {video_id!r}: expected an array with a leading frame axis, got a scalar")
        with self.stream(video_id, array.shape[1:], array.dtype) as rows:
            rows.append(array)
            rows.commit(attrs)

    @contextmanager
    def stream(
        self, video_id: str, row_shape: tuple[int, ...] | None = None, dtype: DTypeLike | None = None
    ) -> Iterator[ArrayStream]:
        """Write ``video_id`` in blocks of rows: :meth:`ArrayStream.append` them, then
        :meth:`ArrayStream.commit`. ``row_shape`` and ``dtype`` are those of a row (by default those of the
        first block). The video is uncommitted and its earlier array removed first; leaving the block without
        a commit (an error) removes what was written."""
        self.markers.uncommit(video_id)
        self._opened.pop(video_id, None)
        fs.remove(fs.join(self.url, video_id))
        stream = ArrayStream(self, video_id, row_shape, dtype)
        try:
            yield stream
        finally:
            stream.close()
            if not stream.committed:
                fs.remove(fs.join(self.url, video_id))

    def _open(self, video_id: str) -> zarr.Array:
        """The committed array of ``video_id``. Handles are kept (up to OPEN_ARRAYS), so a training loader's
        many clip reads of one video skip the marker check and the metadata read."""
        array = self._opened.get(video_id)
        if array is None:
            record = self._record(video_id)
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

    def _record(self, video_id: str) -> dict[str, Any]:
        record = self.markers.commit_record(video_id)
        if record is None:
            raise VideoNotCommittedError(f"video {video_id!r} is not committed in {self.url}")
        return record

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

    def row_blocks(self, video_id: str, rows: int) -> Iterator[np.ndarray]:
        """The committed array of ``video_id`` as consecutive blocks of ``rows`` rows (the last shorter),
        read one at a time; none for an empty array."""
        for start in range(0, self.shape(video_id)[0], rows):
            yield self._read(video_id, slice(start, start + rows))

    def shape(self, video_id: str) -> tuple[int, ...]:
        return tuple(self._record(video_id)["shape"])

    def attrs(self, video_id: str) -> dict[str, Any]:
        return dict(self._record(video_id))

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


class ArrayStream:
    """One video's array as :meth:`VideoArrayStore.stream` writes it: rows arrive in blocks of any size, and
    each full inner chunk (``chunk_frames`` rows) is encoded and appended to the video's shard at once, so the
    stream holds at most one chunk of rows. :meth:`commit` pads the last chunk with zarr's fill value (0),
    writes the shard's index and the array's metadata, and commits the video with the shape, dtype and
    checksum of every row appended: the same files and record as one write of the whole array."""

    def __init__(
        self,
        store: VideoArrayStore,
        video_id: str,
        row_shape: tuple[int, ...] | None,
        dtype: DTypeLike | None,
    ) -> None:
        self.store, self.video_id = store, video_id
        self.row_shape = None if row_shape is None else tuple(row_shape)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.n_rows = 0
        self.committed = False
        self._checksum = 0
        self._pending: np.ndarray | None = None
        self._n_pending = 0
        self._encoder: _ChunkEncoder | None = None
        self._shard: Any = None
        self._chunk_sizes: list[int] = []

    def append(self, rows: np.ndarray) -> None:
        """Add ``rows`` ``[n, *row_shape]`` of ``dtype`` after those appended before."""
        rows = np.ascontiguousarray(rows)
        if self.row_shape is None or self.dtype is None:
            self.row_shape, self.dtype = rows.shape[1:], rows.dtype
        if rows.ndim < 1 or rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(
                f"video {self.video_id!r}: rows of {self.dtype} {list(self.row_shape)} expected, got "
                f"{rows.dtype} {list(rows.shape)}"
            )
        self._checksum = zlib.crc32(rows.data, self._checksum)
        self.n_rows += len(rows)
        chunk = self.store.chunk_frames
        start = 0
        if self._n_pending:
            start = min(chunk - self._n_pending, len(rows))
            self._pending[self._n_pending : self._n_pending + start] = rows[:start]
            self._n_pending += start
            if self._n_pending == chunk:
                self._write_chunk(self._pending)
                self._n_pending = 0
        while len(rows) - start >= chunk:
            self._write_chunk(rows[start : start + chunk])
            start += chunk
        if start < len(rows):
            if self._pending is None:
                self._pending = np.empty((chunk, *self.row_shape), self.dtype)
            self._n_pending = len(rows) - start
            self._pending[: self._n_pending] = rows[start:]

    def commit(self, attrs: dict[str, Any] | None = None) -> None:
        """Finish the array and commit it with ``attrs`` (stored in the array's attributes too)."""
        if self.row_shape is None or self.dtype is None:
            raise ValueError(f"video {self.video_id!r}: no rows appended and no row shape and dtype given")
        chunk_rows = self._encoder.shape[0] if self._encoder else max(1, self.n_rows)
        if self._n_pending:
            last = np.zeros((chunk_rows, *self.row_shape), self.dtype)
            last[: self._n_pending] = self._pending[: self._n_pending]
            self._write_chunk(last)
        if self._shard is not None:
            self._shard.write(_shard_index(self._chunk_sizes))
        self.close()
        shape = (self.n_rows, *self.row_shape)
        chunks = (chunk_rows, *self.row_shape)
        info = {
            "shape": list(shape),
            "dtype": str(self.dtype),
            "checksum": checksum_text(self._checksum),
            **(attrs or {}),
        }
        self.store.group.create_array(  # the shard is in place already: this writes the metadata alone
            name=self.video_id,
            shape=shape,
            dtype=self.dtype,
            chunks=chunks,
            shards=(max(1, len(self._chunk_sizes)) * chunk_rows, *self.row_shape),
            compressors=self.store._codec(self.dtype),
            dimension_names=self.store._dimension_names(len(shape)),
            attributes=info,
            config={"write_empty_chunks": True},  # every chunk stored: a missing one is damage, not zeros
        )
        self.store.markers.commit(self.video_id, info)
        self.committed = True

    def close(self) -> None:
        """Close the shard's file (an upload ends here); the stream's block does it."""
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    def _write_chunk(self, rows: np.ndarray) -> None:
        if self._encoder is None:
            self._encoder = _ChunkEncoder(rows.shape, rows.dtype, self.store._codec(rows.dtype))
            self._shard = fs.open_output(fs.join(self.store.url, self.video_id, _shard_key(rows.ndim)))
        encoded = self._encoder.encode(rows)
        self._shard.write(encoded)
        self._chunk_sizes.append(len(encoded))


def _shard_key(ndim: int) -> str:
    """The key of an array's only shard (zarr v3's default chunk key encoding): ``c/0/0/0/0``."""
    return "/".join(["c", *["0"] * ndim])


def _shard_index(chunk_sizes: list[int]) -> bytes:
    """A shard's index after its chunks: ``(offset, nbytes)`` of each chunk as little-endian uint64, then the
    CRC-32C of those bytes (zarr's default index codecs)."""
    sizes = np.asarray(chunk_sizes, dtype="<u8")
    table = np.stack([np.cumsum(sizes) - sizes, sizes], axis=1).astype("<u8").tobytes()
    return table + np.uint32(google_crc32c.value(table)).astype("<u4").tobytes()


class _ChunkEncoder:
    """Encodes inner chunks of one shape with a store's codecs, by zarr itself: each is written to an
    in-memory array of that one chunk and its stored bytes taken."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, compressor: BloscCodec | None) -> None:
        self.shape = shape
        self._stored: dict[str, Any] = {}
        self._array = zarr.create_array(
            store=MemoryStore(self._stored),
            shape=shape,
            chunks=shape,
            dtype=dtype,
            compressors=compressor,
            config={"write_empty_chunks": True},
        )
        self._key = _shard_key(len(shape))

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """The stored bytes of ``rows`` (one whole chunk), as ``uint8``."""
        self._array[...] = rows
        return self._stored[self._key].as_numpy_array()
