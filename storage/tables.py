"""Parquet tables (manifest, clusters, pseudo-labels, metrics) read and written through fsspec."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from motionfit.storage import fs


def write_table(url: str, table: pd.DataFrame) -> None:
    """Write ``table`` to the parquet file ``url`` atomically (readers never see a partial file)."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buffer, compression="zstd")
    fs.write_bytes_atomic(url, buffer.getvalue())


def read_table(url: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read the parquet file ``url``; raises FileNotFoundError naming it when it is missing."""
    filesystem, path = fs.resolve(url)
    if not filesystem.exists(path):
        raise FileNotFoundError(f"table {url} does not exist")
    with filesystem.open(path, "rb") as handle:
        return pq.read_table(handle, columns=columns).to_pandas()


def table_exists(url: str) -> bool:
    return fs.exists(url)
