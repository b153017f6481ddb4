"""The flow teacher learns the synthetic motion classes: mp4 files, decode, TV-L1, teacher, test videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import labelled_videos
from motionfit.tasks.data.config import DecodeConfig, SynthConfig
from motionfit.tasks.data.decode import decode_videos
from motionfit.tasks.data.ingest import build_manifest, synthetic_data_config
from motionfit.tasks.data.synth import generate_dataset
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import compute_flows
from motionfit.tasks.training.config import TeacherConfig
from motionfit.tasks.training.finetune import predict_videos
from motionfit.tasks.training.loop import load_network
from motionfit.tasks.training.teacher import train_teacher

pytestmark = pytest.mark.slow

CLASSES = ["TranslateLeft", "TranslateUp", "ZoomIn"]


def test_teacher_learns_synthetic_motion_classes_from_tvl1_flow(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    synth = SynthConfig(
        seed=1,
        classes=CLASSES,
        n_train_per_class=8,
        n_test_per_class=4,
        n_source_per_class=0,
        n_frames=12,
        frame_size_px=(48, 48),
        object_size_px=(12, 18),
        background_contrast=0.3,
    )
    generate_dataset(tmp_path / "data", synth)
    manifest = build_manifest(synthetic_data_config(tmp_path / "data"))
    layout = RunLayout.at(tmp_path / "run")
    decode_videos(
        list(zip(manifest["video_id"], manifest["path"], strict=True)), layout, DecodeConfig(short_side=48)
    )
    compute_flows(list(manifest["video_id"]), layout, FlowConfig())
    config = TeacherConfig(
        arch="r3d_18",
        width_multiplier=0.25,
        layers=(1, 1, 1, 1),
        clip_length=8,
        crop_size=32,
        crop_scales=(1.0, 0.875),
        batch_size=8,
        num_workers=0,
        epochs=40,
        lr=0.05,
        warmup_epochs=2,
        clips_per_video=2,
    )
    train_teacher(layout, manifest, config, "cpu")
    network, _ = load_network(layout.checkpoint("teacher"))
    test = labelled_videos(manifest, "test")
    ids, probabilities = predict_videos(network, layout, list(test["video_id"]), "flow", 5, 8, 32)
    truth = test.set_index("video_id").loc[ids, "label_index"].to_numpy()
    accuracy = float(np.mean(probabilities.argmax(axis=1) == truth))
    assert accuracy >= 0.66, f"teacher test top-1 {accuracy:.2f} on {len(CLASSES)} classes (chance 0.33)"
