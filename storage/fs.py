"""Filesystem access for run roots given as local paths or fsspec URLs (``s3://bucket/run``, ``memory://x``)."""

from __future__ import annotations

import json
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec import AbstractFileSystem


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options of every filesystem a run opens on ``url``: an object store's listings are not cached,
    since other workers write to the same prefix (with s3fs's default cache, a commit marker written by
    another process stayed invisible to ``ls``, ``exists`` and ``open`` of a process that had listed its
    folder before). Credentials never come from here: fsspec and the store's SDK read them from the
    environment (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``)."""
    return {} if is_local(url) else {"use_listings_cache": False}


def resolve(url: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem holding ``url`` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    return fs, path


def zarr_store(url: str) -> Any:
    """What zarr opens ``url`` from: the path itself, or an fsspec store with :func:`storage_options`."""
    if is_local(url):
        return url
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(url, storage_options=storage_options(url))


def join(url: str, *parts: str) -> str:
    """``url`` with ``parts`` appended by ``/`` (keeps the protocol)."""
    return posixpath.join(url.rstrip("/"), *parts) if parts else url


def is_local(url: str) -> bool:
    """True when ``url`` is a plain path or a ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def exists(url: str) -> bool:
    fs, path = resolve(url)
    return fs.exists(path)


def makedirs(url: str) -> None:
    fs, path = resolve(url)
    fs.makedirs(path, exist_ok=True)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the whole new one, never a part.

    Local files are written to a temporary name and renamed; object stores make a single PUT atomic anyway.
    """
    fs, path = resolve(url)
    if is_local(url):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)  # an object store has no folders to make
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as handle:
            handle.write(data)


def open_output(url: str) -> Any:
    """A binary file at ``url`` opened for writing in order: a local file (its folder made), or an object
    store's upload in parts (s3fs sends one part per block), so a large file is never held whole."""
    fs, path = resolve(url)
    if is_local(url):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    return fs.open(path, "wb")


def read_json(url: str) -> Any:
    """The JSON file ``url``, in one request on an object store (opening a file first asks for its details,
    and for a missing key s3fs then lists its prefix); FileNotFoundError when it is missing."""
    fs, path = resolve(url)
    return json.loads(fs.cat_file(path))


def write_json_atomic(url: str, payload: Any) -> None:
    write_bytes_atomic(url, json.dumps(payload, sort_keys=True, default=str).encode())


def list_names(url: str, suffix: str = "") -> list[str]:
    """Base names (without ``suffix``) of the files directly under ``url``; empty when it does not exist."""
    fs, path = resolve(url)
    if not fs.exists(path):
        return []
    names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    return sorted(n[: len(n) - len(suffix)] for n in names if n.endswith(suffix) and ".tmp-" not in n)


def remove_file(url: str) -> None:
    """Delete the file ``url``; nothing happens when it does not exist. One request on an object store,
    where :func:`remove` first asks whether the key exists (and lists its prefix when it does not)."""
    fs, path = resolve(url)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def remove(url: str) -> None:
    """Delete a file or folder tree; nothing happens when it does not exist."""
    fs, path = resolve(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
