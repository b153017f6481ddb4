"""The Fisher-vector fit as the fv_fit stage runs it: from a sample read out of idt.zarr."""

from __future__ import annotations

import numpy as np

from motionfit.flows.prior import fv_fit_task
from motionfit.storage.arrays import VideoArrayStore
from motionfit.storage.layout import RunLayout
from motionfit.tasks.idt.columns import REFERENCE_COLUMNS
from motionfit.tasks.prior.config import FisherConfig
from motionfit.tasks.prior.fisher import fit_fisher_model, load_fisher_model

ROW_DIM = REFERENCE_COLUMNS.row_dim


def test_fv_fit_opens_only_the_sampled_videos_and_fits_as_on_arrays_in_memory(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    arrays = {
        f"v{i}": rng.normal(size=(n, ROW_DIM)).astype(np.float32) for i, n in enumerate([90, 30, 70, 60])
    }
    layout = RunLayout.at(tmp_path)
    store = layout.store("idt", chunk_frames=16)
    for video_id, array in arrays.items():
        store.write(video_id, array)
    opened: list[str] = []
    original = VideoArrayStore._open
    monkeypatch.setattr(VideoArrayStore, "_open", lambda self, v: opened.append(v) or original(self, v))
    config = FisherConfig(n_sample_videos=2, descriptors_per_video=25, gmm={"n_components": 2, "max_iter": 5})

    url = fv_fit_task.fn(str(tmp_path), list(arrays), config, REFERENCE_COLUMNS, "inputs")
    assert len(opened) == 2, "only the sampled videos are opened"
    stored = load_fisher_model(url)
    in_memory = fit_fisher_model(arrays, config)
    for block, expected in zip(stored.blocks, in_memory.blocks, strict=True):
        np.testing.assert_allclose(block.gmm.means, expected.gmm.means, rtol=1e-6)
