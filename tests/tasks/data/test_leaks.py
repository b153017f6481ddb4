"""One video file in two roles (target test and train or the unlabelled pool) is found by path and content."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from motionfit.tasks.data.leaks import split_leaks


def _video(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def _manifest(rows: list[tuple[str, str, str, str, bool]]) -> pd.DataFrame:
    """Rows of (video_id, dataset, split, path, in_source)."""
    return pd.DataFrame(
        [
            {"video_id": v, "dataset": d, "split": s, "path": p, "in_source": pool, "status": "ok",
             "label_index": 0 if s != "unlabelled" else -1}
            for v, d, s, p, pool in rows
        ]
    )  # fmt: skip


def test_the_same_file_under_two_spellings_a_link_or_a_copy_is_a_leak(tmp_path: Path) -> None:
    test_video = _video(tmp_path / "ucf" / "a" / "x.avi", b"x" * 70_000 + b"test")
    os.symlink(test_video, tmp_path / "link.avi")
    copy = _video(tmp_path / "kinetics" / "copy.avi", b"x" * 70_000 + b"test")
    other = _video(tmp_path / "kinetics" / "other.avi", b"y" * 70_004)  # same size, other content
    spelled = str(tmp_path / "ucf" / "a" / ".." / "a" / "x.avi")
    manifest = _manifest(
        [
            ("target.test_x", "target", "test", test_video, False),
            ("target.train_x", "target", "train", spelled, False),
            ("source.link", "source", "unlabelled", str(tmp_path / "link.avi"), True),
            ("source.copy", "source", "unlabelled", copy, True),
            ("source.other", "source", "unlabelled", other, True),
        ]
    )
    (leak,) = split_leaks(manifest)  # one file: its spellings, link and copy are one group
    assert leak.startswith("one file in two roles: ")
    for named in ("target.test_x (test", "target.train_x (train", "source.link (pool", "source.copy (pool"):
        assert named in leak
    assert "source.other" not in leak
    assert split_leaks(manifest[manifest["video_id"] != "target.test_x"]) == [], "no test video, no leak"


def test_train_videos_in_the_pool_are_no_leak(tmp_path: Path) -> None:
    train = _video(tmp_path / "train.avi", b"t")
    manifest = _manifest(
        [
            ("target.t", "target", "train", train, True),  # data.target_train_in_source: all
            ("target.q", "target", "test", _video(tmp_path / "test.avi", b"q"), False),
        ]
    )
    assert split_leaks(manifest) == []
