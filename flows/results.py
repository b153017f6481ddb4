"""Where and how stage tasks keep their Prefect results: plain JSON in the run root, never pickle.

Prefect decodes a stored result record with the serializer its own metadata names, pickle included, even just
to check that a cache entry exists; a run root in a shared bucket would then run anyone's code on every
worker. Stage task results are small values (counts, paths, metrics), so they are written as plain JSON, and
the result storage refuses to hand Prefect any record that another serializer wrote: such a record counts as
missing and its task runs again (and overwrites it)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, is_dataclass
from typing import Any, Literal

import numpy as np
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect.serializers import Serializer

logger = logging.getLogger(__name__)

SERIALIZER_TYPE = "motionfit-json"


def plain(value: Any) -> Any:
    """``value`` as JSON types: dataclasses and mappings as objects, tuples as lists, numpy scalars as
    numbers; anything else is a ``TypeError`` naming its type."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a stage task returned a {type(value).__name__}, which plain JSON cannot hold")


class PlainJSONSerializer(Serializer):
    """Serialises plain values (see :func:`plain`) as JSON and reads them back as dicts and lists.

    The exception of a failed task, which Prefect persists too, is kept as its type and message: read back,
    Prefect raises it as a ``FailedRun`` carrying that text."""

    type: Literal["motionfit-json"] = SERIALIZER_TYPE

    def dumps(self, obj: Any) -> bytes:
        if isinstance(obj, BaseException):
            return json.dumps(f"{type(obj).__name__}: {obj}").encode()
        return json.dumps(plain(obj)).encode()

    def loads(self, blob: bytes) -> Any:
        return json.loads(blob)


def checked_record(content: bytes, path: str) -> bytes:
    """``content`` when it is a result record written by :class:`PlainJSONSerializer`, else ``ValueError``."""
    try:
        serializer = json.loads(content)["metadata"]["serializer"]["type"]
    except (ValueError, KeyError, TypeError):
        serializer = None
    if serializer != SERIALIZER_TYPE:
        logger.warning("ignoring result record %s: serializer %r, not %r", path, serializer, SERIALIZER_TYPE)
        raise ValueError(f"result record {path} was not written by the {SERIALIZER_TYPE} serializer")
    return content


class _CheckedReads:
    """Reads of a Prefect file system block that pass only :func:`checked_record` records."""

    def read_path(self, path: str, _sync: bool = True) -> bytes:
        return checked_record(super().read_path(path, _sync=True), path)  # type: ignore[misc]

    async def aread_path(self, path: str) -> bytes:
        return checked_record(await super().aread_path(path), path)  # type: ignore[misc]


class CheckedLocalFileSystem(_CheckedReads, LocalFileSystem):
    """Prefect's local file system storage, reading only plain-JSON result records."""

    _block_type_slug = "motionfit-checked-local-file-system"


class CheckedRemoteFileSystem(_CheckedReads, RemoteFileSystem):
    """Prefect's fsspec storage (s3://, gcs://, ...), reading only plain-JSON result records."""

    _block_type_slug = "motionfit-checked-remote-file-system"
