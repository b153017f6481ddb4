"""Shared fixtures: one Prefect test server per session, a micro synthetic data set on disk, one torch
thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect server and database for the whole session (starting one costs ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def single_torch_thread() -> Iterator[None]:
    """One intra-op torch thread while the test runs: the machine's cores are shared, and results do not
    depend on it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def micro_synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic data set of 3 motion classes: 2 train, 1 test, 2 source videos each, 10 frames of 32x32."""
    from motionfit.tasks.data.config import SynthConfig
    from motionfit.tasks.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    config = SynthConfig(
        seed=3,
        classes=["TranslateLeft", "TranslateUp", "RotateClockwise"],
        n_train_per_class=2,
        n_test_per_class=1,
        n_source_per_class=2,
        n_frames=10,
        frame_size_px=(32, 32),
    )
    generate_dataset(root, config)
    return root
