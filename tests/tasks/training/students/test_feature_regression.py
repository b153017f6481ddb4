"""MERS and MARS: the RGB student regresses the frozen flow teacher's features on the labelled target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_NETWORK, save_teacher, write_moving_squares

from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.training.config import StudentConfig
from motionfit.tasks.training.loop import load_checkpoint, load_network
from motionfit.tasks.training.students import feature_regression
from motionfit.tasks.training.students.feature_regression import FeatureRegression
from motionfit.tasks.training.students.objective import frozen_teacher
from motionfit.tasks.training.students.trainer import train_student

STUDENT = {**TINY_NETWORK, "warmup_epochs": 0, "clips_per_video": 2}  # save_teacher's network, on RGB
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _threads(single_torch_thread: None) -> None:
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunLayout, pd.DataFrame]:
    layout, manifest = write_moving_squares(tmp_path_factory.mktemp("run"), n_train=2, n_test=1, n_source=1)
    save_teacher(layout)
    return layout, manifest


def test_the_feature_loss_is_zero_on_the_teachers_features_and_trains_the_student_only(
    run: tuple[RunLayout, pd.DataFrame],
) -> None:
    layout, _ = run
    teacher = frozen_teacher(layout, StudentConfig(), CPU)
    regression = FeatureRegression(teacher)
    torch.manual_seed(0)
    flow = torch.randn(3, 2, 6, 24, 24)
    with torch.no_grad():
        exact = teacher.features(flow)
    loss, teacher_features = regression.loss(exact, flow)
    assert loss.item() == 0.0 and torch.equal(teacher_features, exact)
    student = build_model("r3d_18", 3, None, width_multiplier=1 / 16, layers=(1, 1, 1, 1)).train()
    loss, _ = regression.loss(student.features(torch.randn(3, 3, 6, 24, 24)), flow)
    loss.backward()
    assert loss.item() > 0 and all(p.grad is not None for p in student.parameters())
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())


def test_each_rgb_clip_is_paired_with_the_flow_of_its_frames_crop_and_flip(
    run: tuple[RunLayout, pd.DataFrame],
) -> None:
    layout, manifest = run
    # 32 x 32 frames, 24 x 24 crops at any offset and no resizing: both masks are exact
    config = StudentConfig(**STUDENT, objective="mers", crop_scales=(0.75,), horizontal_flip=True)
    setup = feature_regression.setup(layout, manifest, config, CPU)
    train_ids = set(manifest.loc[manifest["split"] == "train", "video_id"])
    assert set(setup.dataset.video_ids) == train_ids and setup.dataset.modalities == ("rgb", "flow")
    flipped = []
    for index in range(len(setup.dataset)):
        item = setup.dataset[(3, index)]
        square = item["rgb"].mean(dim=0) > 0.5  # the bright square; the background is darker
        moving = item["flow"].abs().amax(dim=0) > 0.05  # where the flow is not zero
        assert torch.equal(square, moving), f"clip {index}: the RGB and flow clips differ"
        x_flow = item["flow"][0][moving]
        direction = manifest.set_index("video_id").loc[setup.dataset.keys["video_id"][index], "label"]
        if direction in ("left", "right"):
            flipped.append(bool((x_flow > 0).all()) == (direction == "left"))  # a flip negates x
    assert any(flipped) and not all(flipped)


@pytest.mark.parametrize("objective", ["mers", "mars"])
def test_a_short_training_lowers_the_feature_loss(
    run: tuple[RunLayout, pd.DataFrame], objective: str
) -> None:
    layout, manifest = run
    # lr 0.01: at 0.05 alpha 50's steps toward this untrained teacher's small features (RMS 0.01) leave
    # every pooled feature of the student at zero, its last ReLUs dead
    config = StudentConfig(**STUDENT, objective=objective, epochs=6, lr=0.01, feature_weight=50.0)
    stage = f"student_{objective}"
    summary = train_student(layout, manifest, config, "cpu", stage=stage)
    history = read_table(layout.history(stage))
    mse = history["feature_mse"].to_numpy()
    assert summary["n_items"] == 16  # 2 clips of each of the 8 train videos, no test or source video
    assert mse[-1] < 0.5 * mse[0], f"feature MSE {mse} does not decrease"
    assert history["feature_r2"].iloc[-1] > history["feature_r2"].iloc[0]
    assert (history["teacher_feature_rms"] > 0).all() and (history["student_feature_rms"] > 0).all()
    network, checkpoint = load_network(summary["checkpoint"])
    assert not any(k.startswith("teacher") for k in load_checkpoint(summary["checkpoint"])["model"])
    if objective == "mers":
        assert network.fc is None and history["loss"].to_numpy() == pytest.approx(50.0 * mse, rel=1e-4)
    else:
        assert network.fc.out_features == 4 and checkpoint["network_args"]["in_channels"] == 3
        total = history["classification_loss"] + 50.0 * history["feature_mse"]
        np.testing.assert_allclose(history["loss"], total, rtol=1e-4)


def test_a_student_of_another_width_than_the_teacher_is_refused(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    config = StudentConfig(**{**STUDENT, "width_multiplier": 1 / 8}, objective="mers")
    with pytest.raises(ValueError, match="has 32 features and the mers student 64"):
        feature_regression.setup(layout, manifest, config, CPU)
