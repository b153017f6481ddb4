"""The evaluate stage scores each method's evaluated network: stored fine-tuning predictions, or the network
itself where a method is not fine-tuned (CMPL's primary network, the flow teacher)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from helpers import write_moving_squares

from motionfit.models.video_net import build_model
from motionfit.tasks.evaluation.stage import method_test_probabilities
from motionfit.tasks.training.loop import save_checkpoint

CLIP = {"clip_length": 6, "frame_stride": 1, "crop_size": 24}


def test_a_method_without_fine_tuning_is_scored_by_its_student_network(tmp_path: Path) -> None:
    layout, manifest = write_moving_squares(tmp_path, n_train=1, n_test=2, n_source=0)
    torch.manual_seed(0)
    args = {"arch": "r3d_18", "in_channels": 3, "num_classes": 4, "width_multiplier": 1 / 16}
    args["layers"] = (1, 1, 1, 1)
    network = build_model(**args)
    state = {f"student.{k}": v for k, v in network.state_dict().items()}
    checkpoint = {"model": state, "network_args": args, "network_prefix": "student.", "config": CLIP}
    save_checkpoint(layout.checkpoint("student_cmpl"), {**checkpoint, "epoch": 0})
    test_ids = manifest.loc[manifest["split"] == "test", "video_id"].tolist()
    ids, probabilities = method_test_probabilities("cmpl", layout, test_ids, n_clips=2, device="cpu")
    assert ids == test_ids and probabilities.shape == (len(test_ids), 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
