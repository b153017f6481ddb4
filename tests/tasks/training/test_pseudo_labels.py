"""Clip-level pseudo-labels: parquet schema, keys aligned with the teacher's clips, targets, accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from helpers import TEACHER_CLIP, save_teacher, write_moving_squares

from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import ClipDataset, clip_keys, frame_counts
from motionfit.tasks.data.transforms import ClipTransform
from motionfit.tasks.training.config import PseudoLabelConfig
from motionfit.tasks.training.pseudo_labels import (
    generate_pseudo_labels,
    label_groups,
    logits_matrix,
    pseudo_label_accuracy,
    pseudo_targets,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunLayout, pd.DataFrame, torch.nn.Module]:
    layout, manifest = write_moving_squares(tmp_path_factory.mktemp("run"), n_train=1, n_test=0, n_source=2)
    return layout, manifest, save_teacher(layout)


def test_pseudo_label_table_has_the_schema_and_one_row_per_clip(run: tuple) -> None:
    layout, manifest, _ = run
    table = generate_pseudo_labels(
        layout, manifest, PseudoLabelConfig(clips_per_video=3, num_workers=0), "cpu"
    )
    schema = pq.read_schema(layout.pseudo_labels)
    assert schema.names == ["video_id", "clip_index", "start_frame", "logits"]
    assert str(schema.field("logits").type) == "list<element: float>"
    stored = read_table(layout.pseudo_labels)
    sources = manifest.loc[manifest["dataset"] == "source", "video_id"].tolist()
    assert stored["video_id"].tolist() == np.repeat(sources, 3).tolist()
    assert stored["clip_index"].tolist() == [0, 1, 2] * len(sources)
    assert logits_matrix(stored).shape == (3 * len(sources), 4)
    np.testing.assert_array_equal(logits_matrix(stored), logits_matrix(table))


def test_keys_match_the_clips_the_teacher_labelled(run: tuple) -> None:
    layout, manifest, teacher = run
    stored = generate_pseudo_labels(
        layout, manifest, PseudoLabelConfig(clips_per_video=3, num_workers=0), "cpu"
    )
    sources = manifest.loc[manifest["dataset"] == "source", "video_id"].tolist()
    keys = clip_keys(frame_counts(layout, sources, ("rgb",)), TEACHER_CLIP["clip_length"], 3)
    pd.testing.assert_frame_equal(
        stored[["video_id", "clip_index", "start_frame"]], keys.drop(columns="n_frames")
    )
    row = 4
    clip = ClipDataset(layout, keys, ("flow",), 6, ClipTransform(crop_size=24))[row]["flow"]
    with torch.no_grad():
        expected = teacher(clip[None])[0].numpy()
    np.testing.assert_allclose(stored.loc[row, "logits"], expected, rtol=1e-4, atol=1e-5)
    assert len({tuple(np.round(v, 4)) for v in stored["logits"]}) == len(stored)  # each clip its own label


def test_video_level_gives_every_clip_the_video_mean(run: tuple) -> None:
    layout, manifest, _ = run
    clip_level = generate_pseudo_labels(layout, manifest, PseudoLabelConfig(clips_per_video=3, num_workers=0))
    video_level = generate_pseudo_labels(
        layout, manifest, PseudoLabelConfig(clips_per_video=3, level="video", num_workers=0), "cpu"
    )
    means = pd.DataFrame(logits_matrix(clip_level)).groupby(clip_level["video_id"]).transform("mean")
    np.testing.assert_allclose(logits_matrix(video_level), means.to_numpy(), rtol=1e-5)


def test_segment_level_gives_every_clip_the_mean_of_its_segment(run: tuple) -> None:
    layout, manifest, _ = run
    clip_level = generate_pseudo_labels(layout, manifest, PseudoLabelConfig(clips_per_video=6, num_workers=0))
    config = PseudoLabelConfig(clips_per_video=6, level="segment", segments=3, num_workers=0)
    segment_level = generate_pseudo_labels(layout, manifest, config, "cpu")
    segments = clip_level["video_id"] + "#" + (clip_level["clip_index"] // 2).astype(str)  # 6 clips, 3 spans
    means = pd.DataFrame(logits_matrix(clip_level)).groupby(segments).transform("mean")
    np.testing.assert_allclose(logits_matrix(segment_level), means.to_numpy(), rtol=1e-5)
    assert not np.allclose(logits_matrix(segment_level), logits_matrix(clip_level))


def test_label_groups_split_each_videos_clips_into_equal_spans_in_time_order() -> None:
    keys = pd.DataFrame({"video_id": ["a"] * 5 + ["b"] * 2, "start_frame": [8, 0, 2, 4, 6, 0, 3]})
    assert label_groups(keys, 2).tolist() == ["a#1", "a#0", "a#0", "a#0", "a#1", "b#0", "b#1"]
    assert set(label_groups(keys, 1)) == {"a#0", "b#0"}


def test_pseudo_targets_hard_soft_and_topk() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0]])
    hard = pseudo_targets(logits, "hard")
    assert hard.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0]]
    soft = pseudo_targets(logits, "soft", temperature=2.0)
    torch.testing.assert_close(soft, torch.softmax(logits / 2.0, dim=1))
    top2 = pseudo_targets(logits, "topk", temperature=1.0, k=2)
    p = torch.softmax(logits[0], dim=0)
    torch.testing.assert_close(top2[0], torch.tensor([p[0], p[1], 0, 0]) / (p[0] + p[1]))
    torch.testing.assert_close(top2.sum(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="temperature"):
        pseudo_targets(logits, "soft", temperature=0.0)
    with pytest.raises(ValueError, match="unknown pseudo-label mode"):
        pseudo_targets(logits, "sharp")  # type: ignore[arg-type]


def test_pseudo_label_accuracy_uses_heldout_labels_only() -> None:
    manifest = pd.DataFrame(
        {
            "video_id": ["t0", "t1", "s0", "s1", "s2"],
            "dataset": ["target", "target", "source", "source", "source"],
            "label": ["left", "right", None, None, None],
            "label_index": [0, 1, -1, -1, -1],
            "split": ["train", "train", "unlabelled", "unlabelled", "unlabelled"],
            "heldout_label": [None, None, "left", "right", None],
        }
    )
    table = pd.DataFrame(
        {
            "video_id": ["s0", "s0", "s0", "s1", "s1", "s2"],
            "clip_index": [0, 1, 2, 0, 1, 0],
            "start_frame": [0, 4, 8, 0, 4, 0],
            "logits": [np.array(v, np.float32) for v in ([3, 0], [0, 1], [2, 0], [0, 1], [1, 0], [0, 1])],
        }
    )
    scores = pseudo_label_accuracy(table, manifest)
    assert scores["n_clips"] == 5 and scores["n_videos"] == 2  # s2 has no held-out label
    assert scores["clip_top1"] == pytest.approx(100 * 3 / 5)
    assert scores["video_top1"] == pytest.approx(50.0)  # s0 right; s1 ties, argmax 0 is wrong
    assert np.isnan(pseudo_label_accuracy(table, manifest.drop(columns="heldout_label"))["clip_top1"])


def test_pseudo_labelling_needs_unlabelled_videos_and_a_teacher(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    manifest = pd.DataFrame(
        {"video_id": ["a"], "dataset": ["target"], "label_index": [0], "split": ["train"]}
    )
    with pytest.raises(FileNotFoundError, match="teacher"):
        generate_pseudo_labels(layout, manifest, PseudoLabelConfig(), "cpu")
    save_teacher(layout)
    with pytest.raises(ValueError, match="no unlabelled"):
        generate_pseudo_labels(layout, manifest, PseudoLabelConfig(), "cpu")
