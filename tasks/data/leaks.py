"""Leaks between splits: one video file in two roles, found at ingest before any stage reads it.

A target test video that is also a train video, or also in the unlabelled pool that pseudo-labelling, the
students and the IDT prior see, inflates every test figure. Files are matched by resolved path (so
``a/../a/x.mp4``, ``a/x.mp4`` and a symbolic link to it are one file) and, among files of equal size, by a
hash of their first 64 KiB (a copy under another name); only files whose sizes collide are read.
"""

from __future__ import annotations

import hashlib
import os

import pandas as pd

HEAD_BYTES = 64 * 1024
LISTED_LEAKS = 10


def video_roles(manifest: pd.DataFrame) -> pd.Series:
    """Each manifest row's role for leak checks: ``test`` (target test or val), ``train`` (labelled target
    train) or ``pool`` (the unlabelled pool); rows in none of them are ``None``."""
    target = manifest["dataset"] == "target"
    roles = pd.Series(None, index=manifest.index, dtype=object)
    roles[target & manifest["split"].isin(["test", "val"])] = "test"
    roles[target & (manifest["split"] == "train") & (manifest["label_index"] >= 0)] = "train"
    roles[manifest["in_source"].astype(bool) & roles.isna()] = "pool"
    return roles


def _head_hash(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(HEAD_BYTES)).hexdigest()


def content_keys(paths: pd.Series) -> pd.Series:
    """A key per file: its resolved path, or ``size:head-hash`` when another file (another resolved path)
    has its size, so that copies under other names get the same key."""
    resolved = paths.map(os.path.realpath)
    files = pd.Series(resolved.unique())
    sizes = files.map(os.path.getsize)
    shared = sizes.duplicated(keep=False)
    keys = dict(zip(files, files, strict=True))
    keys.update(
        (path, f"{size}:{_head_hash(path)}") for path, size in zip(files[shared], sizes[shared], strict=True)
    )
    return resolved.map(keys)


def split_leaks(manifest: pd.DataFrame) -> list[str]:
    """One line per file that is a target test video and also a train or pool video (readable rows only)."""
    readable = manifest[(manifest["status"] == "ok")].copy()
    readable["role"] = video_roles(readable)
    readable = readable[readable["role"].notna()]
    if readable.empty:
        return []
    readable["key"] = content_keys(readable["path"])
    leaks = []
    for _, group in readable.groupby("key", sort=True):
        roles = set(group["role"])
        if "test" in roles and len(roles) > 1:
            listed = ", ".join(f"{row.video_id} ({row.role}: {row.path})" for row in group.itertuples())
            leaks.append(f"one file in two roles: {listed}")
    if len(leaks) > LISTED_LEAKS:
        leaks = [*leaks[:LISTED_LEAKS], f"... and {len(leaks) - LISTED_LEAKS} more files in two roles"]
    return leaks
