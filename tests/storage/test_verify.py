"""Committed arrays are checked against their commits: a deleted, truncated or altered chunk is found, named
and (repaired) uncommitted; a reader never returns zeros for a missing chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motionfit.storage import verify
from motionfit.storage.arrays import DamagedVideoError, array_checksum
from motionfit.storage.layout import RunLayout
from motionfit.storage.verify import uncommit_damaged, verify_store


def _shard(store, video_id: str) -> Path:
    (shard,) = [p for p in (Path(store.url) / video_id / "c").rglob("*") if p.is_file()]
    return shard


@pytest.fixture
def stores(tmp_path: Path):
    layout = RunLayout.at(tmp_path)
    rng = np.random.default_rng(0)
    frames, flow = layout.store("frames"), layout.store("flow")
    for video_id in ("a", "b", "c"):
        frames.write(video_id, rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8))
        flow.write(video_id, rng.integers(0, 255, (19, 8, 8, 2), dtype=np.uint8))
    return frames, flow


def test_a_commit_records_the_arrays_checksum(stores) -> None:
    frames, _ = stores
    assert frames.markers.committed_info("a")["checksum"] == array_checksum(frames.read("a"))
    assert verify_store(frames) == []


def test_a_deleted_truncated_or_altered_chunk_is_found_and_named(stores) -> None:
    frames, flow = stores
    _shard(flow, "a").unlink()
    shard = _shard(flow, "b")
    shard.write_bytes(shard.read_bytes()[:-40])
    raw = _shard(frames, "c")  # frames are stored raw: a flipped byte still decodes
    data = bytearray(raw.read_bytes())
    data[100] ^= 0xFF
    raw.write_bytes(bytes(data))

    with pytest.raises(DamagedVideoError, match=r"video 'a' is damaged in .*flow\.zarr/a: 2 of its 2 chunks"):
        flow.read("a")
    with pytest.raises(DamagedVideoError, match=r"'b' is damaged .*motionfit verify .* --repair"):
        flow.read_range("b", 0, 4)
    problems = {d.video_id: d.problem for d in verify_store(flow)}
    assert problems["a"] == "2 of its 2 chunks are missing" and "does not decode" in problems["b"]
    (altered,) = verify_store(frames)
    assert altered.video_id == "c" and altered.path.endswith("frames.zarr/c")
    assert altered.problem.startswith("its data has checksum crc32:")
    assert verify_store(frames, read_data=False) == [], "the quick check looks at files and chunks only"

    uncommit_damaged(flow, verify_store(flow))
    assert flow.committed_ids() == {"c"}
    assert flow.markers.failures()["a"].startswith("verify: ")


def test_an_array_is_checked_one_block_of_chunks_at_a_time(stores, monkeypatch) -> None:
    frames, _ = stores
    monkeypatch.setattr(verify, "READ_BLOCK_BYTES", 1)  # one inner chunk a block
    assert verify_store(frames) == []
    raw = _shard(frames, "b")
    data = bytearray(raw.read_bytes())
    data[len(data) // 2 + 50] ^= 0xFF  # inside a later chunk than the first
    raw.write_bytes(bytes(data))
    (altered,) = verify_store(frames)
    assert altered.video_id == "b" and altered.problem.startswith("its data has checksum crc32:")
