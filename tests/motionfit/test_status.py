"""``motionfit status``: training stages show the epochs they finished of those the run's config plans."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from motionfit.config import load_config
from motionfit.flows.pipeline import save_run_config
from motionfit.status import run_outputs
from motionfit.storage.layout import RunLayout


def test_training_stages_show_finished_of_planned_epochs(tmp_path: Path) -> None:
    config = load_config(preset="tiny", overrides={"run_root": str(tmp_path), "teacher": {"epochs": 5}})
    save_run_config(config)
    layout = RunLayout.at(tmp_path)
    for stage, finished in (("teacher", 3), ("finetune_scratch", 0)):
        Path(layout.checkpoints(stage)).mkdir(parents=True)
        if finished:
            pd.DataFrame({"epoch": range(finished), "loss": 1.0}).to_parquet(layout.history(stage))
    states = dict(zip(run_outputs(layout)["stage"], run_outputs(layout)["state"], strict=True))
    assert states["train:teacher"] == "epoch 3/5"
    assert states["train:finetune_scratch"] == f"epoch 0/{config.finetune.epochs}"
