"""Per-video matrices stored as one zarr v3 group readable by xarray (``fv.zarr``, and its batch parts).

The group holds ``vectors`` ``[video_id, <column dimension>]`` and the coordinate ``video_id`` (its rows'
video ids, variable-length strings), both with zarr's ``dimension_names``, so ``xarray.open_zarr`` labels
every row with its video. The group's attribute ``sha256`` is a hash of the vectors' bytes and ids: a
fingerprint of the content that does not change when identical values are rewritten.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from motionfit.storage import fs

VECTORS = "vectors"
VIDEO_ID = "video_id"


class MatrixFormatError(ValueError):
    """A stored matrix predates the ``video_id`` coordinate (or is no matrix group)."""


def content_hash(video_ids: list[str], array: np.ndarray) -> str:
    """sha256 of the ids and of the array's dtype, shape and bytes."""
    digest = hashlib.sha256("\n".join(video_ids).encode())
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write_video_matrix(
    url: str,
    video_ids: list[str],
    array: np.ndarray,
    column_dimension: str,
    attrs: dict[str, Any] | None = None,
    chunk_rows: int = 1024,
) -> None:
    """Write ``array`` ``[V, D]`` (any dtype) with one row per id of ``video_ids`` as the group at ``url``,
    replacing what was there; ``column_dimension`` names the second axis (e.g. ``sketch_dim``)."""
    array = np.ascontiguousarray(array)
    if array.ndim != 2 or array.shape[0] != len(video_ids):
        raise ValueError(f"matrix {url}: {array.shape} rows do not match {len(video_ids)} video ids")
    group = zarr.open_group(store=fs.zarr_store(url), mode="w", zarr_format=3)
    vectors = group.create_array(
        VECTORS,
        shape=array.shape,
        dtype=array.dtype,
        chunks=(max(1, min(chunk_rows, array.shape[0])), max(1, array.shape[1])),
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),
        dimension_names=(VIDEO_ID, column_dimension),
    )
    ids = group.create_array(VIDEO_ID, shape=(len(video_ids),), dtype=str, dimension_names=(VIDEO_ID,))
    if array.size:
        vectors[...] = array
    if video_ids:
        ids[...] = np.asarray(video_ids, dtype=object)
    group.attrs.update({**(attrs or {}), "sha256": content_hash(video_ids, array)})


def _open(url: str) -> zarr.Group:
    try:
        node = zarr.open(store=fs.zarr_store(url), mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as error:
        raise FileNotFoundError(f"matrix {url} does not exist") from error
    if not isinstance(node, zarr.Group) or VIDEO_ID not in node:
        raise MatrixFormatError(
            f"matrix {url} has no {VIDEO_ID!r} coordinate: it was written by an earlier motionfit; re-run "
            "the stage that wrote it (motionfit run --from fv_encode)"
        )
    return node


def read_video_matrix(url: str) -> tuple[list[str], np.ndarray]:
    """``(video_ids, array [V, D])`` of the matrix at ``url``; FileNotFoundError naming it when missing,
    :class:`MatrixFormatError` when it predates the ``video_id`` coordinate."""
    group = _open(url)
    ids = [str(v) for v in group[VIDEO_ID][...]] if group[VIDEO_ID].shape[0] else []
    return ids, group[VECTORS][...]


def matrix_fingerprint(url: str) -> str | None:
    """The content hash of the matrix at ``url`` (None when it does not exist or predates it)."""
    try:
        return _open(url).attrs.get("sha256")
    except (FileNotFoundError, MatrixFormatError):
        return None
