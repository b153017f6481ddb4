"""The CPU stages on Dask: decode, flow and IDT on a local cluster of worker processes store the same bytes
as on the default runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from motionfit.config import load_config
from motionfit.flows.pipeline import pipeline_flow
from motionfit.storage.layout import ARRAY_STORES, RunLayout

pytest.importorskip("distributed")
pytest.importorskip("prefect_dask")

pytestmark = pytest.mark.slow

SYNTH = {
    "classes": ["TranslateLeft", "RotateClockwise"],
    "n_train_per_class": 1,
    "n_test_per_class": 1,
    "n_source_per_class": 2,
    "n_frames": 18,
    "frame_size_px": [48, 48],
}
"""8 videos of 18 frames at 48x48, 4 of them unlabelled source videos (the ones IDT runs on)."""


def _run_until_idt(root: Path, runtime: dict[str, Any]) -> RunLayout:
    """Ingest, decode, flow and IDT of the :data:`SYNTH` data set in ``root/run``, on ``runtime``'s runner."""
    config = load_config(
        preset="tiny",
        overrides={
            "run_root": str(root / "run"),
            "synth_root": str(root / "data"),
            "synth": SYNTH,
            "decode": {"short_side": 48},
            "cluster": {"n_clusters": 2},
            "runtime": {"videos_per_batch": 2, **runtime},
        },
    )
    pipeline_flow(config, until="idt")
    return RunLayout.at(config.run_root)


def _stored_arrays(layout: RunLayout) -> dict[tuple[str, str], np.ndarray]:
    """Every committed array of decode, flow and IDT, by (store, video id)."""
    arrays = {}
    for name in ARRAY_STORES:
        store = layout.store(name)
        for video_id in sorted(store.committed_ids()):
            arrays[name, video_id] = store.read(video_id)
    return arrays


@pytest.fixture(scope="module")
def default_run(prefect_server, tmp_path_factory: pytest.TempPathFactory) -> RunLayout:
    return _run_until_idt(tmp_path_factory.mktemp("threads"), {})


def _assert_same_arrays(run: RunLayout, reference: RunLayout) -> None:
    """``run`` committed the videos of ``reference``, each array of the same dtype, shape, bytes and commit
    checksum."""
    arrays, expected = _stored_arrays(run), _stored_arrays(reference)
    assert sorted(arrays) == sorted(expected)
    assert {name for name, _ in expected} == set(ARRAY_STORES)
    assert sum(name == "idt" for name, _ in expected) == 4 and all(len(a) for a in expected.values())
    for key, array in expected.items():
        assert arrays[key].dtype == array.dtype and arrays[key].shape == array.shape, key
        assert arrays[key].tobytes() == array.tobytes(), key
        stage = ARRAY_STORES[key[0]][1]
        assert run.markers(stage).identity(key[1]) == reference.markers(stage).identity(key[1]), key


def test_the_runners_own_local_cluster_stores_the_default_runners_bytes(default_run, tmp_path: Path) -> None:
    # The runner's own cluster is handed to the stages by its scheduler's address (cpu_task_runner), so
    # this also runs the dask_address path.
    run = _run_until_idt(tmp_path, {"task_runner": "dask", "max_workers": 2})
    _assert_same_arrays(run, default_run)
