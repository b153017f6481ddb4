"""What a run's methods need from its videos, checked on the manifest at ingest and after decode; frames a
video needs; synth or own videos."""

from __future__ import annotations

import pandas as pd
import pytest

from motionfit.config import load_config
from motionfit.flows.preprocess import frames_needed
from motionfit.tasks.data.preflight import manifest_problems
from motionfit.tasks.methods import METHODS


def _manifest(
    n_train: int = 2,
    n_test: int = 2,
    n_source: int = 4,
    source_labels: bool = True,
    broken_test: bool = False,
) -> pd.DataFrame:
    test_status = "missing" if broken_test else "ok"
    rows = (
        [("target", "train", "walk", 0, "walk", False, "ok")] * n_train
        + [("target", "test", "walk", 0, "walk", False, test_status)] * n_test
        + [("source", "unlabelled", None, -1, "walk" if source_labels else None, True, "ok")] * n_source
    )
    columns = ["dataset", "split", "label", "label_index", "heldout_label", "in_source", "status"]
    return pd.DataFrame(rows, columns=columns).assign(video_id=lambda df: [f"v{i}" for i in range(len(df))])


def _methods(*names: str) -> list:
    return [METHODS[name] for name in names]


def test_data_that_serves_every_method_has_no_problem() -> None:
    assert manifest_problems(_manifest(), _methods(*METHODS), n_clusters=3) == []
    assert manifest_problems(_manifest(n_source=0), _methods("scratch", "teacher", "cmpl"), None) == []


def test_each_missing_part_is_one_line_naming_what_needs_it() -> None:
    problems = manifest_problems(_manifest(n_train=0, n_test=2, broken_test=True), _methods("scratch"), None)
    assert len(problems) == 2
    assert "no readable labelled train video" in problems[0] and "no readable test video" in problems[1]

    (problem,) = manifest_problems(_manifest(n_source=0), _methods("scratch", "motionfit", "idt_la"), None)
    assert "motionfit, idt_la train on the source" in problem and "data.target_train_in_source" in problem

    (problem,) = manifest_problems(_manifest(source_labels=False), _methods("supervised"), None)
    assert "supervised trains on the source's true labels" in problem and "source_heldout_labels" in problem

    (problem,) = manifest_problems(_manifest(n_source=4), _methods("idt_la"), n_clusters=5)
    assert "n_clusters is 5, more than the 4 readable source videos" in problem
    assert manifest_problems(_manifest(n_source=4), _methods("motionfit"), n_clusters=5) == []


def test_synth_and_own_videos_are_not_both_taken() -> None:
    with pytest.raises(
        ValueError, match=r"synth and data.target_video_root, data.source_format are both set"
    ):
        load_config(
            preset="tiny", overrides={"data": {"target_video_root": "/videos", "source_format": "folder"}}
        )
    with pytest.raises(ValueError, match=r"--set synth=null"):
        load_config(preset="tiny", overrides={"data": {"target_csv": "target.csv", "target_format": "csv"}})
    own = load_config(preset="tiny", overrides={"synth": None, "data": {"target_video_root": "/videos"}})
    assert own.synth is None and str(own.data.target_video_root) == "/videos"
    assert (
        load_config(preset="tiny", overrides={"data": {"labelled_fraction": 0.5}}).data.labelled_fraction
        == 0.5
    )


def test_a_video_needs_the_frames_of_the_longest_clip_or_idt_trajectory_of_the_run() -> None:
    config = load_config(preset="tiny", overrides={"methods": ["scratch", "teacher"]})
    assert frames_needed(config) == (9, "teacher clips span 8 frames")  # 8 flow frames from 9 video frames
    strided = config.model_copy(update={"finetune": config.finetune.model_copy(update={"frame_stride": 2})})
    assert frames_needed(strided) == (16, "finetune clips span 15 frames")
    with_idt = load_config(preset="tiny", overrides={"methods": ["scratch", "idt_la"]})
    assert frames_needed(with_idt) == (16, "IDT trajectories of idt.track_length 15")


def test_after_decode_only_decoded_videos_count() -> None:
    manifest = _manifest(n_train=2, n_test=2).assign(status_decode="done")
    train = manifest["split"] == "train"
    manifest.loc[train, "status_decode"] = "excluded"
    assert manifest_problems(manifest, _methods("scratch"), None) == [], (
        "at ingest every train video is readable"
    )
    (problem,) = manifest_problems(manifest, _methods("scratch"), None, stages=("decode",))
    assert "the target has no usable labelled train video" in problem
