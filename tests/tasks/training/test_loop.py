"""The shared training loop: LR schedule, loss decrease, checkpoints, and exact resumption after a crash."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import write_moving_squares

from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.training.config import TeacherConfig, TrainingConfig
from motionfit.tasks.training.loop import (
    StepOutput,
    TrainingState,
    capture_rng_state,
    fit,
    load_checkpoint,
    lr_factor,
    make_lr_scheduler,
    make_optimizer,
    make_scaler,
    restore_rng_state,
    save_checkpoint,
    train_one_epoch,
    video_accuracy,
)
from motionfit.tasks.training.teacher import train_teacher

TINY = {
    "width_multiplier": 1 / 16,
    "layers": (1, 1, 1, 1),
    "clip_length": 8,
    "crop_size": 32,
    "num_workers": 0,
}


class Crash(RuntimeError):
    pass


def test_lr_schedule_warms_up_linearly_then_decays() -> None:
    cosine = TrainingConfig(epochs=10, warmup_epochs=2, warmup_factor=0.1, lr_schedule="cosine")
    assert lr_factor(0, 5, cosine) == pytest.approx(0.1)
    assert lr_factor(5, 5, cosine) == pytest.approx(0.55)  # halfway through the 10 warm-up iterations
    assert lr_factor(10, 5, cosine) == pytest.approx(1.0)
    assert lr_factor(30, 5, cosine) == pytest.approx(0.5)  # halfway through the 40 cosine iterations
    steps = TrainingConfig(epochs=10, lr_schedule="multistep", lr_milestones=(4, 8), lr_gamma=0.1)
    assert [round(lr_factor(e * 5, 5, steps), 6) for e in (0, 3, 4, 7, 8, 9)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    scheduler = make_lr_scheduler(optimizer, 5, cosine)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="iters_per_epoch"):
        make_lr_scheduler(optimizer, 0, cosine)


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    model = build_model("r3d_18", 3, 2, width_multiplier=1 / 16, layers=(1, 1, 1, 1))
    clips = torch.randn(8, 3, 4, 16, 16)
    labels = torch.tensor([0, 1] * 4)
    batches = [{"rgb": clips[:4], "label": labels[:4]}, {"rgb": clips[4:], "label": labels[4:]}]
    config = TrainingConfig(lr=0.05, epochs=6, weight_decay=0.0)
    optimizer = make_optimizer(model.parameters(), config)
    scaler = make_scaler(config, torch.device("cpu"))

    def step(batch: dict[str, Any]) -> StepOutput:
        return StepOutput(F.cross_entropy(model(batch["rgb"]), batch["label"]), n_clips=4)

    losses = [
        train_one_epoch(model, step, optimizer, None, batches, torch.device("cpu"), epoch, scaler)["loss"]
        for epoch in range(6)
    ]
    assert losses[-1] < 0.5 * losses[0]
    metrics = train_one_epoch(model, step, optimizer, None, batches, torch.device("cpu"), 6, scaler)
    assert metrics["clips_per_s"] > 0 and metrics["lr"] == pytest.approx(0.05)


def test_non_finite_loss_stops_training() -> None:
    model = torch.nn.Linear(2, 1)
    config = TrainingConfig()

    def step(batch: dict[str, Any]) -> StepOutput:
        return StepOutput(model(batch["x"]).sum() * float("nan"))

    with pytest.raises(FloatingPointError, match="epoch 3 step 0"):
        train_one_epoch(
            model,
            step,
            make_optimizer(model.parameters(), config),
            None,
            [{"x": torch.ones(1, 2)}],
            torch.device("cpu"),
            3,
            make_scaler(config, torch.device("cpu")),
        )


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002 - the global state is what is being saved
    torch.manual_seed(3)
    state = capture_rng_state()
    expected = (random.random(), np.random.random(), torch.rand(2))  # noqa: NPY002
    url = str(tmp_path / "ck.pt")
    save_checkpoint(url, {"rng_state": state})
    restored = load_checkpoint(url)  # weights_only=True inside: plain types and tensors only
    random.seed(9)
    restore_rng_state(restored["rng_state"])
    assert (random.random(), np.random.random()) == expected[:2]  # noqa: NPY002
    assert torch.equal(torch.rand(2), expected[2])
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_fit_resumes_after_the_last_completed_epoch(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    config = TrainingConfig(epochs=4)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model.parameters(), config)
    state = TrainingState(model, optimizer, None, make_scaler(config, torch.device("cpu")), {"arch": "none"})
    ran: list[int] = []

    def run_epoch(epoch: int) -> dict[str, Any]:
        ran.append(epoch)
        return {"loss": 1.0 / (epoch + 1)}

    def crash_after_epoch_1(metrics: dict[str, Any]) -> None:
        if metrics["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        fit(layout, "toy", config, state, run_epoch, crash_after_epoch_1)
    history = fit(layout, "toy", config, state, run_epoch)
    assert ran == [0, 1, 2, 3]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert read_table(layout.history("toy"))["loss"].tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    ran.clear()
    fit(layout, "toy", config.model_copy(update={"num_workers": 7}), state, run_epoch)  # ignored field
    assert ran == []
    fit(
        layout, "toy", config.model_copy(update={"lr": 0.5}), state, run_epoch
    )  # another config: from scratch
    assert ran == [0, 1, 2, 3]


def _toy_training(config: TrainingConfig) -> tuple[TrainingState, list[int], Callable[[int], dict[str, Any]]]:
    """A linear model's training state and an epoch function that records the epochs it ran."""
    model = torch.nn.Linear(2, 2)
    state = TrainingState(
        model, make_optimizer(model.parameters(), config), None, make_scaler(config, torch.device("cpu")), {}
    )
    ran: list[int] = []

    def run_epoch(epoch: int) -> dict[str, Any]:
        ran.append(epoch)
        return {"loss": 1.0}

    return state, ran, run_epoch


def test_fit_retrains_when_its_training_data_changed(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    config = TrainingConfig(epochs=2)
    state, ran, run_epoch = _toy_training(config)

    fit(layout, "toy", config, state, run_epoch, data_key="clusters v1")
    fit(layout, "toy", config, state, run_epoch, data_key="clusters v1")  # finished: nothing to do
    assert ran == [0, 1]
    fit(layout, "toy", config, state, run_epoch, data_key="clusters v2")  # same config, new labels
    assert ran == [0, 1, 0, 1]
    assert load_checkpoint(layout.checkpoint("toy"))["data_key"] == "clusters v2"


def test_a_checkpoint_from_before_a_new_config_field_resumes_while_the_field_holds_its_default(
    tmp_path: Path,
) -> None:
    layout = RunLayout.at(tmp_path)
    config = TrainingConfig(epochs=2)
    state, ran, run_epoch = _toy_training(config)

    fit(layout, "toy", config, state, run_epoch)
    checkpoint = load_checkpoint(layout.checkpoint("toy"))
    del checkpoint["config"]["momentum"]  # as written by code that predates the field
    checkpoint["config"]["retired_field"] = 3  # and a field since removed
    save_checkpoint(layout.checkpoint("toy"), checkpoint)
    fit(layout, "toy", config, state, run_epoch)
    assert ran == [0, 1]  # finished already: nothing retrained
    fit(layout, "toy", config.model_copy(update={"momentum": 0.5}), state, run_epoch)
    assert ran == [0, 1, 0, 1]  # the new field set to another value: another config


def test_interrupted_and_resumed_training_ends_with_identical_weights(tmp_path: Path) -> None:
    layout, manifest = write_moving_squares(tmp_path, n_train=2, n_test=0, n_source=0, n_frames=10)
    config = TeacherConfig(
        **TINY, clips_per_video=2, epochs=3, batch_size=2, dropout=0.3, horizontal_flip=True, warmup_epochs=1
    )
    torch.set_num_threads(1)
    train_teacher(layout, manifest, config, "cpu", stage="straight")

    def crash_after_epoch_1(metrics: dict[str, Any]) -> None:
        if metrics["epoch"] == 1:
            raise Crash("simulated crash after epoch 1")

    with pytest.raises(Crash):
        train_teacher(layout, manifest, config, "cpu", on_epoch_end=crash_after_epoch_1, stage="resumed")
    assert load_checkpoint(layout.checkpoint("resumed"))["epoch"] == 1
    random.seed(123)  # a new process would start from other generator states: resumption must restore them
    torch.manual_seed(123)
    train_teacher(layout, manifest, config, "cpu", stage="resumed")

    expected = load_checkpoint(layout.checkpoint("straight"))
    actual = load_checkpoint(layout.checkpoint("resumed"))
    assert expected["epoch"] == actual["epoch"] == 2
    assert expected["model"].keys() == actual["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name
    momentum = [s["momentum_buffer"] for s in expected["optimizer"]["state"].values()]
    assert all(
        torch.equal(a, s["momentum_buffer"])
        for a, s in zip(momentum, actual["optimizer"]["state"].values(), strict=True)
    )
    straight_losses = read_table(layout.history("straight"))["loss"].tolist()
    assert read_table(layout.history("resumed"))["loss"].tolist() == straight_losses


def test_video_accuracy_averages_clip_scores_per_video() -> None:
    videos = np.array(["a", "a", "a", "b", "b"])
    labels = np.array([0, 0, 0, 1, 1])
    logits = np.array([[5.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]], dtype=np.float32)
    assert video_accuracy(videos, labels, logits) == 100.0  # a: one confident clip outweighs two weak ones
    assert video_accuracy(videos, 1 - labels, logits) == 0.0


def test_checkpoint_is_written_atomically(tmp_path: Path) -> None:
    url = str(tmp_path / "stage" / "last.pt")
    save_checkpoint(url, {"epoch": 0, "weights": torch.ones(2)})
    save_checkpoint(url, {"epoch": 1, "weights": torch.zeros(2)})
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["last.pt"]
    loaded = load_checkpoint(url)
    assert loaded["epoch"] == 1 and torch.equal(loaded["weights"], torch.zeros(2))
    buffer = io.BytesIO((tmp_path / "stage" / "last.pt").read_bytes())
    assert torch.load(buffer, weights_only=True)["epoch"] == 1
