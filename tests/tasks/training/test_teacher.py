"""The flow teacher learns motion classes (square moving left/right/up/down) far above chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import write_moving_squares

from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import labelled_videos
from motionfit.tasks.training.config import TeacherConfig
from motionfit.tasks.training.finetune import predict_videos
from motionfit.tasks.training.loop import load_checkpoint, load_network
from motionfit.tasks.training.teacher import train_teacher

TINY = {
    "arch": "r2plus1d_18",
    "width_multiplier": 1 / 8,
    "layers": (1, 1, 1, 1),
    "clip_length": 8,
    "crop_size": 32,
    "num_workers": 0,
}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def test_teacher_learns_directions_from_flow(tmp_path: Path) -> None:
    layout, manifest = write_moving_squares(tmp_path, n_train=6, n_val=1, n_test=4, n_source=0, n_frames=12)
    config = TeacherConfig(
        **TINY,
        clips_per_video=2,
        eval_clips_per_video=1,
        epochs=10,
        batch_size=4,
        lr=0.05,
        warmup_epochs=1,
        dropout=0.0,
        seed=1,
    )
    published: list[dict] = []
    summary = train_teacher(layout, manifest, config, "cpu", on_epoch_end=published.append)

    assert summary["epochs"] == 10 and summary["n_videos"] == 24 and summary["num_classes"] == 4
    assert [m["epoch"] for m in published] == list(range(10))
    assert published[-1]["loss"] < published[0]["loss"]
    history = read_table(layout.history("teacher"))
    assert history["epoch"].tolist() == list(range(10)) and "val_video_top1" in history

    network, checkpoint = load_network(summary["checkpoint"])
    assert checkpoint["network_args"]["in_channels"] == 2 and checkpoint["epoch"] == 9
    test = labelled_videos(manifest, "test")
    video_ids, probabilities = predict_videos(
        network, layout, test["video_id"].tolist(), "flow", n_clips=2, clip_length=8, crop_size=32
    )
    labels = test.set_index("video_id").loc[video_ids, "label_index"].to_numpy()
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.8, f"teacher test top-1 {accuracy:.2f} (chance 0.25)"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_teacher_rejects_a_manifest_without_labelled_videos(tmp_path: Path) -> None:
    manifest = pd.DataFrame(
        {"video_id": ["a"], "dataset": ["source"], "label_index": [-1], "split": ["unlabelled"]}
    )
    with pytest.raises(ValueError, match="no labelled target train videos"):
        train_teacher(RunLayout.at(tmp_path), manifest, TeacherConfig(**TINY), "cpu")


def test_completed_teacher_is_not_retrained(tmp_path: Path) -> None:
    layout, manifest = write_moving_squares(tmp_path, n_train=1, n_test=0, n_source=0, n_frames=10)
    config = TeacherConfig(**TINY, clips_per_video=1, epochs=1, batch_size=2)
    train_teacher(layout, manifest, config, "cpu")
    before = load_checkpoint(train_teacher(layout, manifest, config, "cpu")["checkpoint"])
    calls: list[dict] = []
    again = train_teacher(layout, manifest, config, "cpu", on_epoch_end=calls.append)
    after = load_checkpoint(again["checkpoint"])
    assert calls == [] and again["epochs"] == 1
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])


def test_an_appearance_teacher_trains_on_frames_and_pseudo_labels_them(tmp_path: Path) -> None:
    from motionfit.tasks.training.config import PseudoLabelConfig
    from motionfit.tasks.training.pseudo_labels import generate_pseudo_labels, logits_matrix

    layout, manifest = write_moving_squares(tmp_path, n_train=1, n_test=0, n_source=1, n_frames=10)
    config = TeacherConfig(**TINY, modality="rgb", clips_per_video=1, epochs=1, batch_size=2)
    summary = train_teacher(layout, manifest, config, "cpu")
    checkpoint = load_checkpoint(summary["checkpoint"])
    assert checkpoint["network_args"]["in_channels"] == 3 and checkpoint["config"]["modality"] == "rgb"
    labels = generate_pseudo_labels(
        layout, manifest, PseudoLabelConfig(clips_per_video=2, num_workers=0), "cpu"
    )
    assert logits_matrix(labels).shape == (2 * (manifest["dataset"] == "source").sum(), 4)


def test_an_appearance_teacher_is_refused_for_methods_that_regress_flow_features() -> None:
    from motionfit.config import load_config

    with pytest.raises(ValueError, match="mscl, mers learn from a flow teacher's features"):
        load_config(
            preset="tiny", overrides={"teacher": {"modality": "rgb"}, "methods": ["scratch", "mscl", "mers"]}
        )
    assert load_config(preset="tiny", overrides={"teacher": {"modality": "rgb"}}).teacher.modality == "rgb"
