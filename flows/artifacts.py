"""Prefect artifacts: what a person watching a run sees in the UI (tables, the report, plots, progress).

Every artifact has a stable key (lowercase letters, digits, dashes) scoped to its run root (:func:`run_key`),
so the artifacts of two run roots never mix; publishing again under the same key adds a version, and the UI
shows the latest. Images travel as ``data:image/png;base64,...`` URLs, in image
artifacts and inside the markdown report, so they render in the UI without a file server. The functions are
for synchronous flows and tasks; called outside a flow or task run they publish nothing, log at debug level
and return ``None`` (so pure code and tests may call them freely).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import posixpath
import re
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import pandas as pd
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.context import get_run_context
from prefect.exceptions import MissingContextError

from motionfit.storage import fs

logger = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MARKDOWN_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<target>[^)\s]+\.png)\)")


def artifact_key(*parts: str) -> str:
    """A valid key from free-form parts: ``artifact_key("Teacher", "epochs")`` gives ``teacher-epochs``."""
    key = "-".join(part for part in (re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts) if part)
    if not key:
        raise ValueError(f"artifact key parts {parts!r} hold no letter or digit")
    return key


SCOPE_NAME_CHARS = 24


def run_scope(run_root: str) -> str:
    """The key prefix of one run root's artifacts: its folder name (at most 24 characters) and 6 hex digits
    of a hash of its whole URL, e.g. ``deployed-demo-3fa2c1``: two roots named alike still differ."""
    name = artifact_key(posixpath.basename(run_root.rstrip("/")) or "run")[:SCOPE_NAME_CHARS].strip("-")
    return f"{name}-{hashlib.sha256(run_root.encode()).hexdigest()[:6]}"


def run_key(run_root: str, *parts: str) -> str:
    """The key of an artifact of ``run_root``: ``run_key("/runs/demo", "report")`` is ``demo-<6 hex>-report``
    (see :func:`run_scope`)."""
    return artifact_key(run_scope(run_root), *parts)


def _check_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"artifact key {key!r} must be lowercase letters, digits and single dashes")
    return key


def in_run() -> bool:
    """True inside a Prefect flow or task run, where artifacts attach to the run."""
    try:
        get_run_context()
    except MissingContextError:
        return False
    return True


def _skipped(kind: str, key: str) -> bool:
    if in_run():
        return False
    logger.debug("not in a Prefect run: %s artifact %r not published", kind, key)
    return True


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows of ``table``: numpy scalars become Python numbers, NaN/NaT/None null, and other
    objects (timestamps, paths) their ``str``."""
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    return json.loads(json.dumps(records, default=str))


def publish_table(key: str, table: pd.DataFrame, description: str | None = None) -> UUID | None:
    """Publish ``table`` as a table artifact under ``key``; returns its id (``None`` outside a run)."""
    if _skipped("table", _check_key(key)):
        return None
    return create_table_artifact(table=table_records(table), key=key, description=description)


def png_data_url(png: bytes | str) -> str:
    """``data:image/png;base64,...`` for PNG bytes or the path/URL of a PNG file."""
    data = png if isinstance(png, bytes) else _read_bytes(png)
    if not data.startswith(PNG_SIGNATURE):
        source = "bytes" if isinstance(png, bytes) else png
        raise ValueError(f"{source} is not a PNG image (no PNG signature)")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _read_bytes(url: str) -> bytes:
    filesystem, path = fs.resolve(url)
    if not filesystem.exists(path):
        raise FileNotFoundError(f"image {url} does not exist")
    with filesystem.open(path, "rb") as handle:
        return handle.read()


def embed_images(markdown: str, base_url: str) -> str:
    """Replace each relative PNG reference ``![alt](plots/x.png)`` in ``markdown`` by a data URL of the file
    ``base_url/plots/x.png``; absolute URLs (``http:``, ``data:``, ...) are left alone."""

    def inline(match: re.Match[str]) -> str:
        target = match["target"]
        if "://" in target or target.startswith(("data:", "/")):
            return match[0]
        return f"![{match['alt']}]({png_data_url(fs.join(base_url, posixpath.normpath(target)))})"

    return _MARKDOWN_IMAGE.sub(inline, markdown)


def publish_markdown(
    key: str, markdown: str, description: str | None = None, image_base_url: str | None = None
) -> UUID | None:
    """Publish ``markdown`` under ``key``; with ``image_base_url`` (e.g. the run root holding ``report.md``)
    its relative PNG references are embedded as data URLs first (see :func:`embed_images`)."""
    if _skipped("markdown", _check_key(key)):
        return None
    if image_base_url is not None:
        markdown = embed_images(markdown, image_base_url)
    return create_markdown_artifact(markdown=markdown, key=key, description=description)


def publish_image(key: str, png: bytes | str, description: str | None = None) -> UUID | None:
    """Publish a PNG (bytes, or the path/URL of a file) as an image artifact with a data URL."""
    if _skipped("image", _check_key(key)):
        return None
    return create_image_artifact(image_url=png_data_url(png), key=key, description=description)


class ProgressReporter:
    """A progress artifact for a long CPU stage: created at 0 % on construction, moved by :meth:`update`.

    ``total`` is the number of work items (videos); ``update(done)`` sets the percentage ``100 * done /
    total``. Outside a run nothing is published.
    """

    def __init__(self, key: str, total: int, description: str | None = None) -> None:
        if total < 1:
            raise ValueError(f"progress total must be positive, got {total}")
        self.key = _check_key(key)
        self.total = total
        self.description = description
        self.done = 0
        self.artifact_id: UUID | None = None
        if not _skipped("progress", key):
            self.artifact_id = create_progress_artifact(progress=0.0, key=key, description=description)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total

    def update(self, done: int) -> None:
        """Record that ``done`` of ``total`` items are finished (clipped to [0, total])."""
        self.done = min(max(done, 0), self.total)
        if self.artifact_id is not None:
            update_progress_artifact(artifact_id=self.artifact_id, progress=self.percent)

    def advance(self, n_items: int = 1) -> None:
        """Record ``n_items`` more finished items."""
        self.update(self.done + n_items)


def publish_progress(key: str, total: int, description: str | None = None) -> ProgressReporter:
    """Start a progress artifact under ``key`` for ``total`` items; see :class:`ProgressReporter`."""
    return ProgressReporter(key, total, description)


class LiveTable:
    """A table artifact that grows by rows (one per epoch): created on the first row, then updated in place,
    so a stage's run has one artifact that always shows the whole history (not one version per row)."""

    def __init__(self, key: str, description: str | None = None) -> None:
        self.key = _check_key(key)
        self.description = description
        self.rows: list[dict[str, Any]] = []
        self.artifact_id: UUID | None = None

    def append(self, row: Mapping[str, Any]) -> UUID | None:
        """Add ``row`` (column -> value) and show the table with it."""
        self.rows.append(dict(row))
        if self.artifact_id is None:
            self.artifact_id = publish_table(self.key, self.frame, self.description)
        else:
            update = ArtifactUpdate(data=json.dumps(table_records(self.frame)))
            with get_client(sync_client=True) as client:
                client.update_artifact(artifact_id=self.artifact_id, artifact=update)
        return self.artifact_id

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)
