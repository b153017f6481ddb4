"""Every shipped sweep's tiny version runs: its last setting on a micro data set, networks at one epoch, all
sweeps on one root so that they share what they agree on (tests/flows/test_sweep_flow.py runs a sweep of
several settings and checks what they share)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMALL_SYNTH

from motionfit.flows.sweep import sweep_flow
from motionfit.storage.tables import read_table
from motionfit.sweep import load_sweep, setting_configs, sweep_names

pytestmark = [pytest.mark.slow, pytest.mark.sweeps]

NETWORK = {"epochs": 1, "batch_size": 8, "num_workers": 0}
MICRO = {
    "synth": {**SMALL_SYNTH, "n_source_per_class": 8},  # 24 source videos: room for 20 clusters
    "decode": {"short_side": 48},
    "fisher": {"gmm": {"n_components": 2}},
    "teacher": NETWORK,
    "pseudo_label": {"clips_per_video": 2},
    **{section: NETWORK for section in ("motionfit", "mscl", "mers", "mars", "cmpl", "finetune")},
    "idt_la": {**NETWORK, "ir_warmup_epochs": 0, "joint_space_epochs": 0},
    "evaluate": {
        "fewshot_shots": [1],
        "fewshot_seeds": [0],
        "gradcam_videos": 0,
        "retrieval_clips": 1,
        "retrieval_examples": 0,
    },
}


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    root = tmp_path_factory.mktemp("sweeps")
    return str(root / "sweeps"), {**MICRO, "synth_root": str(root / "data")}


@pytest.mark.parametrize("name", sweep_names())
def test_a_shipped_sweeps_tiny_version_runs_into_its_table(prefect_server, sweep_root, name: str) -> None:
    root, overrides = sweep_root
    sweep = load_sweep(name)
    expanded = sweep.expanded()
    tiny = sweep.model_copy(
        update={"grid": {}, "settings": list({s.name: s for s in (expanded[0], expanded[-1])}.values())}
    )
    if name == "joint-space":  # its 10 joint-space epochs follow at least one of Local Aggregation
        overrides = {**overrides, "idt_la": {**overrides["idt_la"], "epochs": 11}}
    runs = setting_configs(tiny, root, preset="tiny", overrides=overrides)
    result = sweep_flow(tiny, runs, root)
    table = read_table(str(Path(root) / "sweep" / name / "table.parquet"))
    assert list(table["setting"]) == [s.name for s in tiny.settings] and set(table["state"]) == {"done"}
    for method in tiny.methods or ():
        for metric in tiny.metrics:
            if method == "teacher" and metric.startswith("fewshot"):
                continue
            assert table[f"{method} {metric}"].notna().all(), (method, metric)
    assert result["markdown"].startswith(f"# Sweep {name}")
