"""Fine-tuning from a checkpoint (frozen early blocks) or from scratch, and video-level prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_NETWORK, write_moving_squares

from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import ClipDataset, clip_keys, frame_counts, labelled_videos
from motionfit.tasks.data.transforms import ClipTransform
from motionfit.tasks.training.config import FinetuneConfig
from motionfit.tasks.training.finetune import finetune, predict_videos
from motionfit.tasks.training.loop import load_checkpoint, save_checkpoint

TINY = {**TINY_NETWORK, "test_clips": 2}
STUDENT_ARGS = {
    "arch": "r3d_18",
    "in_channels": 3,
    "num_classes": None,
    "width_multiplier": 1 / 16,
    "layers": (1, 1, 1, 1),
    "embedding_dim": 128,
}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunLayout, pd.DataFrame, str]:
    layout, manifest = write_moving_squares(
        tmp_path_factory.mktemp("run"), n_train=2, n_val=1, n_test=1, n_source=0
    )
    torch.manual_seed(0)
    student = build_model(**STUDENT_ARGS)  # an embedding network, as Local Aggregation exports it
    url = layout.checkpoint("student")
    save_checkpoint(
        url,
        {
            "model": {f"student.{k}": v for k, v in student.state_dict().items()},
            "network_args": STUDENT_ARGS,
            "network_prefix": "student.",
            "epoch": 0,
        },
    )
    return layout, manifest, url


def test_finetuning_keeps_frozen_blocks_and_trains_a_new_classifier(run: tuple) -> None:
    layout, manifest, student_url = run
    config = FinetuneConfig(**TINY, epochs=2, freeze_blocks=2, lr=0.05, schedule="step")
    summary = finetune(layout, manifest, config, student_url, "finetune_motionfit", "cpu")
    start = load_checkpoint(student_url)["model"]
    tuned = load_checkpoint(summary["checkpoint"])["model"]
    frozen = [k for k in tuned if k.startswith(("backbone.stem.", "backbone.layer1.", "backbone.layer2."))]
    trained = [k for k in tuned if k.startswith("backbone.layer4.") and k.endswith("weight")]
    assert frozen and all(torch.equal(tuned[k], start[f"student.{k}"]) for k in frozen)  # BN statistics too
    assert all(not torch.equal(tuned[k], start[f"student.{k}"]) for k in trained)
    assert tuned["fc.weight"].shape == (4, 32) and not any(k.startswith("embedding.") for k in tuned)
    optimised = load_checkpoint(summary["checkpoint"])["optimizer"]["param_groups"][0]["params"]
    n_frozen = sum(1 for k in frozen if "running" not in k and "num_batches" not in k)
    classifier_args = {**STUDENT_ARGS, "num_classes": 4, "embedding_dim": None}  # the head swapped
    assert len(optimised) == len(list(build_model(**classifier_args).parameters())) - n_frozen
    assert summary["epochs"] == 2 and summary["n_test_videos"] == 4 and 0.0 <= summary["test_top1"] <= 100.0
    predictions = read_table(layout.test_predictions("finetune_motionfit"))
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    top1 = 100 * (probabilities.argmax(axis=1) == predictions["label_index"].to_numpy()).mean()
    assert top1 == pytest.approx(summary["test_top1"])


def test_training_from_scratch_freezes_nothing_and_plateau_watches_validation(run: tuple) -> None:
    layout, manifest, _ = run
    config = FinetuneConfig(**TINY, epochs=2, lr=0.05, schedule="plateau", plateau_patience=0)
    summary = finetune(layout, manifest, config, None, "finetune_scratch", "cpu")
    history = read_table(layout.history("finetune_scratch"))
    assert summary["init_checkpoint"] is None and np.isfinite(history["val_loss"]).all()
    checkpoint = load_checkpoint(summary["checkpoint"])
    assert checkpoint["network_args"]["num_classes"] == 4
    n_parameters = len(list(build_model(**checkpoint["network_args"]).parameters()))
    assert len(checkpoint["optimizer"]["param_groups"][0]["params"]) == n_parameters  # nothing frozen


def test_flow_finetuning_refuses_an_rgb_checkpoint(run: tuple) -> None:
    layout, manifest, student_url = run
    with pytest.raises(ValueError, match="3-channel stem"):
        finetune(
            layout, manifest, FinetuneConfig(**TINY, epochs=1), student_url, "finetune_flow", "cpu", "flow"
        )


def test_predict_videos_averages_the_softmax_of_its_clips(run: tuple) -> None:
    layout, manifest, _ = run
    torch.manual_seed(1)
    model = build_model("r3d_18", 3, 4, width_multiplier=1 / 16, layers=(1, 1, 1, 1)).eval()
    with torch.no_grad():
        model.fc.weight.normal_(0, 1.0)
    test_ids = labelled_videos(manifest, "test")["video_id"].tolist()
    video_ids, probabilities = predict_videos(
        model, layout, [*test_ids, "not_decoded"], "rgb", n_clips=3, clip_length=6, crop_size=24, batch_size=5
    )
    assert video_ids == test_ids and probabilities.shape == (4, 4) and probabilities.dtype == np.float32
    keys = clip_keys(frame_counts(layout, test_ids[1:2], ("rgb",)), 6, 3)
    dataset = ClipDataset(layout, keys, ("rgb",), 6, ClipTransform(crop_size=24))
    with torch.no_grad():
        clips = torch.stack([dataset[i]["rgb"] for i in range(3)])
        expected = torch.softmax(model(clips), dim=1).mean(dim=0).numpy()
    np.testing.assert_allclose(probabilities[1], expected, rtol=1e-4, atol=1e-6)


def test_finetuning_needs_labelled_videos(tmp_path: Path) -> None:
    manifest = pd.DataFrame(
        {"video_id": ["s"], "dataset": ["source"], "label_index": [-1], "split": ["unlabelled"]}
    )
    with pytest.raises(ValueError, match="no labelled target train videos"):
        finetune(RunLayout.at(tmp_path), manifest, FinetuneConfig(**TINY), None, "finetune_scratch", "cpu")
