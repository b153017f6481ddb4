"""Commit markers and a stage's index: the index answers for N videos in one read and is never stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.markers import StageMarkers, compact_record


def _count_marker_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    original = StageMarkers.commit_record

    def counting(self: StageMarkers, video_id: str):
        reads.append(video_id)
        return original(self, video_id)

    monkeypatch.setattr(StageMarkers, "commit_record", counting)
    return reads


def test_the_index_gives_every_identity_in_one_read_and_markers_fill_its_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunLayout.at(tmp_path).store("frames")
    for i in range(5):
        store.write(f"v{i}", np.full((2, 4, 4, 3), i, np.uint8))
    markers = store.markers
    expected = {f"v{i}": markers.identity(f"v{i}") for i in range(5)} | {"gone": None}
    assert all(str(value).startswith("crc32:") for value in list(expected.values())[:5])

    reads = _count_marker_reads(monkeypatch)
    assert markers.identities(expected) == expected, "without an index every marker is read"
    assert len(reads) == 6

    markers.write_index({f"v{i}": compact_record(markers.committed_info(f"v{i}")) for i in range(4)})
    reads.clear()
    assert markers.identities(expected) == expected
    assert sorted(reads) == ["gone", "v4"], "only what the index lacks is read from its marker"
    assert markers.compact_records(["v1"]) == {"v1": {"identity": expected["v1"], "shape": [2, 4, 4, 3]}}

    markers.drop_index()
    assert not fs.exists(markers.index_url)
    markers.drop_index()  # nothing to drop: no error


def test_commits_made_before_checksums_keep_their_time_as_identity(tmp_path: Path) -> None:
    markers = StageMarkers(str(tmp_path), "decode")
    fs.write_json_atomic(fs.join(markers.root, "_markers", "decode", "committed", "old.json"), {"time": 12.5})
    markers.write_index({"old": compact_record(markers.committed_info("old"))})
    assert markers.identities(["old"]) == {"old": 12.5} == {"old": markers.identity("old")}


def test_lazy_arrays_open_only_the_videos_looked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunLayout.at(tmp_path).store("idt", chunk_frames=8)
    for i in range(3):
        store.write(f"v{i}", np.arange(40 * 4, dtype=np.float32).reshape(40, 4) + i)
    reads = _count_marker_reads(monkeypatch)
    arrays = store.arrays(["v0", "v1", "v2"])
    assert list(arrays) == ["v0", "v1", "v2"] and not reads, "listing the mapping opens nothing"
    rows = np.array([3, 17, 39])
    np.testing.assert_array_equal(arrays["v2"][rows], store.read("v2")[rows])
    assert reads[0] == "v2"
    with pytest.raises(KeyError):
        arrays["v9"]
