"""Whole arrays stored as one zarr v3 array (``fv.zarr``: one row per video, row order in a parquet index)."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle


def write_matrix(
    url: str, array: np.ndarray, attrs: dict[str, Any] | None = None, chunk_rows: int = 1024
) -> None:
    """Write ``array`` ``[V, D]`` (any dtype) to the zarr array at ``url``, replacing what was there."""
    array = np.ascontiguousarray(array)
    chunks = (max(1, min(chunk_rows, array.shape[0])), *array.shape[1:])
    target = zarr.create_array(
        store=url,
        shape=array.shape,
        dtype=array.dtype,
        chunks=chunks,
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),
        overwrite=True,
        zarr_format=3,
    )
    if array.size:
        target[...] = array
    target.attrs.update(attrs or {})


def read_matrix(url: str) -> np.ndarray:
    """The whole zarr array at ``url``; FileNotFoundError naming it when it does not exist."""
    try:
        return zarr.open_array(store=url, mode="r", zarr_format=3)[...]
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as error:
        raise FileNotFoundError(f"array {url} does not exist") from error
