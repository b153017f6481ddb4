"""The RGB student: MotionFit pseudo-labels, IDT-prior Local Aggregation, CMPL, and MSCL's options."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_NETWORK, save_teacher, write_moving_squares

from motionfit.models.cmpl import cmpl_pseudo_labels
from motionfit.models.video_net import VideoNet, build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.matrix import write_video_matrix
from motionfit.storage.tables import read_table, write_table
from motionfit.tasks.data.clips import (
    ClipDataset,
    EpochSampler,
    clip_keys,
    clip_loader,
    frame_counts,
    make_loader,
)
from motionfit.tasks.data.transforms import ClipTransform
from motionfit.tasks.training.config import PseudoLabelConfig, StudentConfig
from motionfit.tasks.training.loop import load_checkpoint, load_network
from motionfit.tasks.training.pseudo_labels import generate_pseudo_labels
from motionfit.tasks.training.students import local_aggregation
from motionfit.tasks.training.students import pseudo_labels as pseudo_label_objective
from motionfit.tasks.training.students.cmpl import PairedBatches, cmpl_step
from motionfit.tasks.training.students.local_aggregation import cluster_matrix
from motionfit.tasks.training.students.trainer import train_student

TINY = {**TINY_NETWORK, "warmup_epochs": 0}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunLayout, pd.DataFrame]:
    layout, manifest = write_moving_squares(
        tmp_path_factory.mktemp("run"), n_train=1, n_val=1, n_test=0, n_source=3
    )
    sources = manifest.loc[manifest["dataset"] == "source"]
    rng = np.random.default_rng(0)
    clusters = pd.concat(
        [
            pd.DataFrame(
                {
                    "video_id": sources["video_id"],
                    "run": 0,
                    "k": 4,
                    "cluster": sources["heldout_label"].factorize()[0],
                }
            ),
            pd.DataFrame(
                {
                    "video_id": sources["video_id"],
                    "run": 1,
                    "k": 3,
                    "cluster": rng.integers(0, 3, len(sources)),
                }
            ),
        ]
    )
    write_table(layout.clusters, clusters)
    save_teacher(layout)  # a 6 x 24 x 24 flow network: pseudo-labels and the LMCL teacher
    generate_pseudo_labels(layout, manifest, PseudoLabelConfig(clips_per_video=2, num_workers=0), "cpu")
    return layout, manifest


def test_pseudo_label_student_trains_on_every_labelled_clip(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    config = StudentConfig(**TINY, objective="pseudo_labels", epochs=2, lr=0.05, target_mode="soft")
    epochs: list[dict[str, Any]] = []
    summary = train_student(layout, manifest, config, "cpu", on_epoch_end=epochs.append, stage="student_pl")
    assert summary["n_items"] == len(read_table(layout.pseudo_labels)) == 24
    assert [e["epoch"] for e in epochs] == [0, 1] and all(np.isfinite(e["loss"]) for e in epochs)
    network, checkpoint = load_network(summary["checkpoint"])
    assert isinstance(network, VideoNet) and network.fc.out_features == 4
    assert checkpoint["network_args"]["in_channels"] == 3 and checkpoint["network_prefix"] == "student."


def test_a_student_longer_than_the_teachers_clip_covers_every_labelled_clip(
    run: tuple[RunLayout, pd.DataFrame],
) -> None:
    layout, manifest = run
    labelled = read_table(layout.pseudo_labels)  # the teacher's 6-frame clips of 11-frame flow videos
    config = StudentConfig(**{**TINY, "clip_length": 10}, objective="pseudo_labels")
    keys = pseudo_label_objective.setup(layout, manifest, config, torch.device("cpu")).dataset.keys
    assert len(keys) == len(labelled) == 24
    merged = keys.merge(labelled, on=["video_id", "clip_index"], suffixes=("", "_teacher"))
    assert (merged["start_frame"] + 10 <= merged["n_frames"]).all()
    assert (merged["start_frame"] <= merged["start_frame_teacher"]).all()
    assert (merged["start_frame"] + 10 >= merged["start_frame_teacher"] + 6).all()
    assert (merged["start_frame"] < merged["start_frame_teacher"]).any()


def test_local_aggregation_student_loss_is_finite_and_decreases(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    config = StudentConfig(
        **TINY, objective="local_aggregation", epochs=5, lr=0.05, ir_warmup_epochs=1, clips_per_video=2
    )
    summary = train_student(layout, manifest, config, "cpu", stage="student_la")
    history = read_table(layout.history("student_la"))
    losses = history["loss"].to_numpy()
    assert summary["n_items"] == 12 and np.isfinite(losses).all()
    assert losses[-1] < losses[1], f"Local Aggregation losses {losses[1:]} do not decrease"
    checkpoint = load_checkpoint(summary["checkpoint"])
    bank = checkpoint["model"]["bank.embeddings"]
    assert bank.shape == (12, 128)
    torch.testing.assert_close(bank.norm(dim=1), torch.ones(12))
    network, _ = load_network(summary["checkpoint"])
    assert network.embedding[-1].out_features == 128 and network.fc is None
    health = history[["loss_chance", "bank_mean_cosine", "neighbour_cluster_rate"]]
    assert np.isfinite(health.to_numpy()).all() and (health["bank_mean_cosine"].abs() <= 1).all()
    assert history["loss_chance"].iloc[0] == pytest.approx(np.log(12))  # IR: exact softmax over 12 rows


def test_local_aggregation_bank_starts_from_the_networks_embeddings(
    run: tuple[RunLayout, pd.DataFrame],
) -> None:
    layout, manifest = run
    config = StudentConfig(**{**TINY, "batch_size": 12}, objective="local_aggregation", clips_per_video=2)
    torch.manual_seed(0)
    setup = local_aggregation.setup(layout, manifest, config, torch.device("cpu"))
    random_rows = setup.extra["bank"].embeddings.clone()
    setup.prepare()
    bank = setup.extra["bank"].embeddings
    (batch,) = list(clip_loader(setup.dataset, 12, torch.device("cpu"), shuffle=False))
    with torch.no_grad():
        expected = setup.network.embed_features(setup.network.features(batch["rgb"].flatten(0, 1)))
    torch.testing.assert_close(bank, expected)
    assert not torch.allclose(bank, random_rows)


def test_idt_la_tunes_in_the_joint_idt_and_convnet_space_after_the_fixed_clusters(
    run: tuple[RunLayout, pd.DataFrame],
) -> None:
    layout, manifest = run
    clusters = read_table(layout.clusters)
    prior = clusters[clusters["run"] == 0].set_index("video_id")["cluster"]
    # Fisher vectors that separate the prior's 4 clusters, so a joint space mostly of them keeps its clusters
    write_video_matrix(layout.fv_vectors, prior.index.tolist(), np.eye(8)[prior.to_numpy()], "sketch_dim")
    config = StudentConfig(
        **TINY,
        objective="local_aggregation",
        epochs=3,
        ir_warmup_epochs=0,
        joint_space_epochs=2,
        joint_space_weight=0.1,
        clips_per_video=2,
    )
    train_student(layout, manifest, config, "cpu", stage="student_joint")
    history = read_table(layout.history("student_joint"))
    assert np.isnan(history["joint_prior_nmi"].iloc[0])  # epoch 0: the fixed IDT clusters
    np.testing.assert_allclose(history["joint_prior_nmi"].iloc[1:], 1.0)
    with pytest.raises(ValueError, match="joint_space_epochs 4 exceeds"):
        StudentConfig(objective="local_aggregation", epochs=5, ir_warmup_epochs=2, joint_space_epochs=4)


def test_cluster_matrix_stacks_every_clustering() -> None:
    clusters = pd.DataFrame(
        {"video_id": ["a", "b", "a", "b"], "run": [0, 0, 1, 1], "k": [2, 2, 2, 2], "cluster": [0, 1, 1, 1]}
    )
    assert cluster_matrix(clusters, ["b", "a"]).tolist() == [[1, 0], [1, 1]]
    with pytest.raises(KeyError, match="no cluster"):
        cluster_matrix(clusters, ["a", "c"])


def test_cmpl_step_trains_on_the_schemes_masked_pseudo_labels(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    keys = clip_keys(frame_counts(layout, manifest["video_id"].tolist(), ("rgb",)), 6, 1)
    transform = ClipTransform(crop_size=24, train=True, strong_view=True)
    dataset = ClipDataset(
        layout, keys, ("rgb",), 6, transform, by_video=True, labels={v: 1 for v in keys["video_id"]}
    )
    loader = make_loader(dataset, 4, EpochSampler(len(dataset)), torch.device("cpu"))
    batch = next(iter(PairedBatches(loader, loader)))
    torch.manual_seed(0)
    primary = build_model("r3d_18", 3, 4, width_multiplier=1 / 8, layers=(1, 1, 1, 1)).train()
    auxiliary = build_model("r3d_18", 3, 4, width_multiplier=1 / 32, layers=(1, 1, 1, 1)).train()
    with torch.no_grad():
        primary.fc.weight.mul_(300.0)  # confident primary predictions, an unconfident auxiliary network
    weak = batch["unlabelled_rgb"].flatten(0, 1)
    with torch.no_grad():
        p_primary = torch.softmax(
            primary(torch.cat([batch["labelled_rgb"].flatten(0, 1), weak, weak]))[4:8], 1
        )
        p_auxiliary = torch.softmax(
            auxiliary(torch.cat([batch["labelled_rgb"].flatten(0, 1), weak, weak]))[4:8], 1
        )
    for scheme in ("cross", "fixmatch", "self_first"):
        output = cmpl_step(primary, auxiliary, batch, scheme, 0.95, unlabelled_weight=1.0)
        pseudo_labels, mask = cmpl_pseudo_labels(scheme, p_primary, p_auxiliary, 0.95)
        _, auxiliary_mask = cmpl_pseudo_labels(scheme, p_auxiliary, p_primary, 0.95)
        assert output.metrics["primary_mask_rate"].item() == pytest.approx(100 * mask.float().mean().item())
        assert output.metrics["auxiliary_mask_rate"].item() == pytest.approx(
            100 * auxiliary_mask.float().mean().item()
        )
        accuracy = 100 * (pseudo_labels == 1).float().mean().item()  # every video's held-out label is 1
        assert output.metrics["primary_pseudo_label_top1"].item() == pytest.approx(accuracy)
        assert torch.isfinite(output.loss) and output.n_clips == 12
    crossed = cmpl_step(primary, auxiliary, batch, "cross", 0.95, 1.0)
    assert crossed.metrics["primary_mask_rate"] == 0 and crossed.metrics["primary_unlabelled_loss"] == 0
    assert crossed.metrics["auxiliary_mask_rate"] > 0 and crossed.metrics["auxiliary_unlabelled_loss"] > 0
    nothing = cmpl_step(primary, auxiliary, batch, "fixmatch", 1.0, 1.0)
    supervised = nothing.metrics["primary_supervised_loss"] + nothing.metrics["auxiliary_supervised_loss"]
    torch.testing.assert_close(nothing.loss.detach(), supervised)


def test_cmpl_objective_trains_primary_and_auxiliary_networks(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    config = StudentConfig(**TINY, objective="cmpl", epochs=1, unlabelled_ratio=2, clips_per_video=2)
    summary = train_student(layout, manifest, config, "cpu", stage="student_cmpl")
    checkpoint = load_checkpoint(summary["checkpoint"])
    widths = {
        p: checkpoint["model"][f"{p}.backbone.layer4.0.conv1.0.weight"].shape[0]
        for p in ("student", "auxiliary")
    }
    assert widths == {"student": 32, "auxiliary": 8}  # 512/16 and a quarter of it
    assert summary["n_labelled"] == 4 and summary["n_items"] == 12 and "val_video_top1" in summary
    history = read_table(layout.history("student_cmpl"))
    assert {"primary_mask_rate", "auxiliary_mask_rate", "primary_supervised_loss"} <= set(history.columns)
    assert 0 <= history["primary_pseudo_label_top1"].iloc[0] <= 100  # the sources have held-out labels


def test_cmpl_with_lmcl_contrasts_the_primary_networks_unlabelled_clips(
    run: tuple[RunLayout, pd.DataFrame],
) -> None:
    layout, manifest = run
    config = StudentConfig(
        **TINY, objective="cmpl", epochs=1, unlabelled_ratio=2, clips_per_video=2, lmcl_weight=0.5
    )
    train_student(layout, manifest, config, "cpu", stage="student_cmpl_lmcl")
    history = read_table(layout.history("student_cmpl_lmcl")).iloc[0]
    assert history["lmcl_loss_chance"] == pytest.approx(np.log(2))
    assert np.isfinite(history[["lmcl_loss", "lmcl_loss_other_clip"]].astype(float)).all()


def test_lmcl_adds_the_motion_contrast_against_the_frozen_teacher(
    run: tuple[RunLayout, pd.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    layout, manifest = run
    config = StudentConfig(**TINY, objective="pseudo_labels", epochs=1, lmcl_weight=0.5, motion_sampling=True)
    with caplog.at_level(logging.WARNING):
        summary = train_student(layout, manifest, config, "cpu", stage="student_mscl")
    history = read_table(layout.history("student_mscl")).iloc[0]
    assert np.isfinite(history["lmcl_loss"]) and history["lmcl_loss"] > 0
    # 6-frame clips leave one time step: the positive and the rotated flow, chance ln 2
    assert history["lmcl_loss_chance"] == pytest.approx(np.log(2))
    assert np.isfinite(history["lmcl_loss_other_clip"]) and history["lmcl_loss_other_clip"] > 0
    assert "one time step" in caplog.text
    assert history["loss"] == pytest.approx(history["objective_loss"] + 0.5 * history["lmcl_loss"], rel=1e-4)
    assert summary["n_items"] == 12  # motion sampling keeps the more dynamic of each video's 2 clips
    keys = load_checkpoint(summary["checkpoint"])["model"].keys()
    assert any(k.startswith("lmcl_heads.student.") for k in keys) and not any(
        "teacher.backbone" in k for k in keys
    )


@pytest.mark.parametrize("objective", ["instance_recognition", "video_local_aggregation"])
def test_memory_bank_students_without_a_prior_train_and_report_their_health(
    run: tuple[RunLayout, pd.DataFrame], objective: str
) -> None:
    layout, manifest = run
    config = StudentConfig(
        **TINY,
        objective=objective,
        epochs=3,
        lr=0.05,
        ir_warmup_epochs=1,
        clips_per_video=2,
        la_kmeans_clusters=3,
    )
    stage = f"student_{objective}"
    summary = train_student(layout, manifest, config, "cpu", stage=stage)
    history = read_table(layout.history(stage))
    assert summary["n_items"] == 12 and np.isfinite(history["loss"]).all()
    assert np.isfinite(history["bank_mean_cosine"]).all()
    if objective == "video_local_aggregation":  # LA on the bank's own 3 clusters after one IR epoch
        assert history["loss_chance"].iloc[0] == pytest.approx(np.log(12))
        assert history["loss_chance"].iloc[-1] < np.log(12) and "neighbour_cluster_rate" in history
