"""A run root that reads some outputs from other run roots (``_sources.json``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motionfit.storage.layout import RunLayout


def test_shared_outputs_are_read_and_written_where_the_sources_say(tmp_path: Path) -> None:
    shared, own = tmp_path / "shared", tmp_path / "own"
    layout = RunLayout.at(own).share(
        {"frames.zarr": str(shared), "_markers/decode": str(shared), "checkpoints/teacher": str(shared)}
    )
    assert RunLayout.at(own) == layout, "a new layout of the root reads its sources"
    layout.store("frames").write("v1", np.zeros((2, 4, 4, 3), np.uint8))
    assert (shared / "frames.zarr" / "v1").is_dir() and (
        shared / "_markers" / "decode" / "committed" / "v1.json"
    ).is_file()
    assert not (own / "frames.zarr").exists()
    assert layout.checkpoint("teacher") == str(shared / "checkpoints" / "teacher" / "last.pt")
    assert layout.checkpoint("student_motionfit") == str(
        own / "checkpoints" / "student_motionfit" / "last.pt"
    )
    assert layout.markers("flow").root == str(own) and layout.manifest == str(own / "manifest.parquet")
    assert RunLayout.at(shared).store("frames").committed_ids() == {"v1"}


def test_only_computed_outputs_can_be_shared(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot share"):
        RunLayout.at(tmp_path).share({"metrics.parquet": str(tmp_path / "other")})
