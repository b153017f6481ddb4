"""Sweeps: which outputs settings share, and a sweep run end to end as subflows of one flow run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SMALL_SYNTH

from motionfit.config import changed_label_settings, load_config
from motionfit.flows.sweep import output_keys, sweep_flow, table_markdown
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table
from motionfit.sweep import Sweep, setting_configs

PER_VIDEO = {"frames", "flow", "idt"}


def _changed(**overrides) -> set[str]:
    methods = overrides.get("methods")
    base = output_keys(load_config(preset="tiny", overrides={"methods": methods} if methods else None))
    other = output_keys(load_config(preset="tiny", overrides=overrides))
    assert base.keys() == other.keys()
    return {output for output in base if base[output] != other[output]}


def test_a_student_setting_changes_only_the_outputs_of_the_students_it_configures() -> None:
    assert _changed(motionfit={"epochs": 3}) == {  # the supervised bound trains MotionFit's recipe
        f"checkpoints/{kind}_{method}"
        for kind in ("student", "finetune")
        for method in ("motionfit", "supervised")
    }


def test_a_k_means_setting_changes_the_clusters_and_what_learns_from_them() -> None:
    assert _changed(cluster={"n_clusters": 7}) == {
        "clusters",
        "checkpoints/student_idt_la",
        "checkpoints/finetune_idt_la",
    }


def test_per_video_outputs_serve_every_labelling_seed_and_clip_length() -> None:
    for overrides in (
        {"data": {"labelled_fraction": 0.5}},
        {"runtime": {"seed": 1}},
        {"idt_la": {"clip_length": 32}, "methods": ["scratch", "idt_la"]},
    ):
        changed = _changed(**overrides)
        assert changed and not changed & PER_VIDEO, overrides
    assert "manifest" in _changed(data={"labelled_fraction": 0.5})
    assert "manifest" not in _changed(runtime={"seed": 1}) and "checkpoints/teacher" in _changed(
        runtime={"seed": 1}
    )
    assert _changed(flow={"threads_per_worker": 2}) == set(), "how flow is computed is not what it is"
    assert {"flow", "checkpoints/teacher"} <= _changed(flow={"tau": 0.2})


def test_human_boxes_change_the_trajectories_and_what_follows_them_not_the_decoded_videos() -> None:
    changed = _changed(idt={"human_boxes": True}, methods=["scratch", "idt_la"])
    assert {"idt", "fisher", "clusters", "checkpoints/student_idt_la"} <= changed
    assert not changed & {"frames", "flow"}
    assert "manifest" in _changed(data={"labelled_sampling": "uniform"})


def test_a_sweep_that_sets_what_a_label_names_heads_its_column_with_the_short_label(tmp_path: Path) -> None:
    def markdown(sweep: Sweep, table: pd.DataFrame, overrides: dict | None = None) -> str:
        runs = setting_configs(sweep, str(tmp_path), preset="tiny", overrides=overrides)
        return table_markdown(sweep, table, changed_label_settings(config for _, _, config in runs))

    table = pd.DataFrame(
        {
            "setting": ["modality=rgb", "modality=flow"],
            "state": ["done", "done"],
            "teacher.modality": ["rgb", "flow"],
            "teacher top1": [20.0, 47.5],
            "teacher top1 std": [0.0, 0.0],
            "teacher top1 seeds": [1, 1],
        }
    )
    varying = Sweep(name="m", mirrors="t", methods=("teacher",), grid={"teacher.modality": ["rgb", "flow"]})
    fixed = Sweep(name="k", mirrors="t", methods=("teacher",), settings=[{"name": "all", "set": {}}])
    assert "| Teacher top1 |" in markdown(varying, table)
    assert "| Flow teacher (TV-L1) top1 |" in markdown(fixed, table.drop(columns="teacher.modality"))

    def mscl_rows(key: str, values: list) -> pd.DataFrame:
        scores = {"mscl top1": [45.0, 60.0], "mscl top1 std": [0.0, 0.0], "mscl top1 seeds": [1, 1]}
        return pd.DataFrame({"setting": ["a", "b"], "state": ["done"] * 2, key: values} | scores)

    methods = ("teacher", "mscl")
    lmcl = Sweep(name="l", mirrors="t", methods=methods, grid={"mscl.lmcl_weight": [0.0, 1.0]})
    assert "| MSCL student top1 |" in markdown(lmcl, mscl_rows("mscl.lmcl_weight", [0.0, 1.0]))
    lengths = {"mscl.clip_length": [8, 16]}
    clips = mscl_rows("mscl.clip_length", [8, 16])
    plain = Sweep(name="c", mirrors="t", methods=methods, grid=lengths)
    assert "| MSCL student (motion sampling + LMCL) top1 |" in markdown(plain, clips)
    based = Sweep(name="b", mirrors="t", methods=methods, base={"mscl.motion_sampling": False}, grid=lengths)
    assert "| MSCL student top1 |" in markdown(based, clips)  # the base turns motion sampling off
    assert "| MSCL student top1 |" in markdown(plain, clips, {"mscl": {"lmcl_weight": 0.0}})  # so does --set


NETWORK = {"epochs": 1, "batch_size": 8, "num_workers": 0}


@pytest.mark.slow
def test_a_sweep_over_a_student_setting_computes_the_shared_stages_once(
    prefect_server, tmp_path: Path
) -> None:
    sweep = Sweep(
        name="granularity",
        mirrors="a test table",
        methods=("scratch", "teacher", "motionfit"),
        grid={"pseudo_label.level": ["video", "clip"]},
    )
    user = {
        "synth_root": str(tmp_path / "data"),
        "synth": SMALL_SYNTH,
        "decode": {"short_side": 48},
        "teacher": NETWORK,
        "motionfit": NETWORK,
        "finetune": NETWORK,
        "evaluate": {
            "fewshot_shots": [1],
            "gradcam_videos": 0,
            "retrieval_clips": 1,
            "retrieval_examples": 0,
        },
    }
    root = str(tmp_path / "sweep")
    runs = setting_configs(sweep, root, preset="tiny", overrides=user)
    result = sweep_flow(sweep, runs, root)

    layouts = [RunLayout.at(config.run_root) for _, _, config in runs]
    first, second = layouts
    for entry in (
        "frames.zarr",
        "_markers/flow",
        "manifest.parquet",
        "checkpoints/teacher",
        "checkpoints/finetune_scratch",
    ):
        assert first.root_of(entry) == second.root_of(entry) != first.root, entry
    for entry in ("pseudo_labels.parquet", "checkpoints/student_motionfit", "checkpoints/finetune_motionfit"):
        assert first.root_of(entry) != second.root_of(entry), entry
    assert len(first.markers("flow").committed_ids()) == 24
    history = read_table(first.history("teacher"))
    assert len(history) == 1, "the teacher was trained once, for both settings"
    assert first.root_of("pseudo_labels.parquet") != first.root
    spread = []  # the largest difference of a video's clips' logits
    for layout in layouts:
        labels = read_table(layout.pseudo_labels)
        logits = labels.groupby("video_id")["logits"].apply(
            lambda rows: np.ptp(np.stack(rows.to_numpy()), axis=0).max()
        )
        spread.append(logits.max())
    assert spread[0] == 0 and spread[1] > 0, (
        "video-level labels repeat the video's logits; clip-level ones differ"
    )

    table = read_table(str(Path(root) / "sweep" / "granularity" / "table.parquet"))
    assert list(table["setting"]) == ["level=video", "level=clip"]
    assert list(table["pseudo_label.level"]) == ["video", "clip"] and set(table["state"]) == {"done"}
    for method in ("scratch", "teacher", "motionfit"):
        assert table[f"{method} top1"].between(0, 100).all() and (table[f"{method} top1 seeds"] == 1).all()
    assert table["scratch top1"].nunique() == 1, "both settings score the same shared scratch network"
    scores = [c for c in table.columns if c.endswith(" top1")]
    assert scores == ["scratch top1", "teacher top1", "motionfit top1"], "in the sweep's order of methods"
    assert "| level=video | video |" in result["markdown"]
    assert (Path(root) / "sweep" / "granularity" / "table.md").read_text() == result["markdown"]
