"""Sweep definitions: the shipped sweeps expand into valid configs that differ where they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from motionfit.config import load_config
from motionfit.sweep import load_sweep, setting_configs, setting_folder, sweep_names


def _field(config, path: str):
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("name", sweep_names())
def test_a_shipped_sweep_expands_into_valid_configs_that_set_what_it_varies(
    name: str, tmp_path: Path
) -> None:
    sweep = load_sweep(name)
    assert sweep.mirrors
    runs = setting_configs(sweep, str(tmp_path), preset="tiny")
    assert len(runs) == len(sweep.expanded()) * len(sweep.seeds)
    assert len({config.run_root for _, _, config in runs}) == len(runs), "every run has its own root"
    base = load_config(preset="tiny")
    for setting, seed, config in runs:
        assert config.runtime.seed == seed and config.run_root.startswith(str(tmp_path / "settings"))
        for path, value in setting.set.items():
            expected = type(_field(base, path))(value) if isinstance(value, list) else value
            assert _field(config, path) == expected, (setting.name, path)
        if sweep.methods is not None:
            assert config.methods == sweep.methods


def test_a_grid_is_the_product_of_its_values_and_settings_follow() -> None:
    from motionfit.sweep import Sweep

    sweep = Sweep(
        name="s",
        mirrors="a table",
        grid={"cluster.n_clusters": [5, 10], "cluster.seeds": [[1], [1, 2]]},
        settings=[{"name": "extra", "set": {"teacher.epochs": 1}}],
    )
    names = [setting.name for setting in sweep.expanded()]
    assert names == [
        "n_clusters=5,seeds=1",
        "n_clusters=5,seeds=1-2",
        "n_clusters=10,seeds=1",
        "n_clusters=10,seeds=1-2",
        "extra",
    ]
    assert sweep.varied() == ["cluster.n_clusters", "cluster.seeds", "teacher.epochs"]
    assert setting_folder("n_clusters=5,seeds=1-2", 0) == "n_clusters=5_seeds=1-2-seed0"


def test_the_settings_overrides_win_over_the_users_and_the_sweeps_base(tmp_path: Path) -> None:
    from motionfit.sweep import Sweep

    sweep = Sweep(
        name="s", mirrors="t", base={"teacher.epochs": 3, "teacher.lr": 0.2}, grid={"teacher.epochs": [1, 2]}
    )
    runs = setting_configs(
        sweep, str(tmp_path), preset="tiny", overrides={"teacher": {"epochs": 7, "lr": 0.3}}
    )
    assert [config.teacher.epochs for _, _, config in runs] == [1, 2]
    assert {config.teacher.lr for _, _, config in runs} == {0.3}


def test_bad_sweeps_are_refused_naming_the_problem(tmp_path: Path) -> None:
    from motionfit.sweep import Sweep

    with pytest.raises(ValueError, match="neither a grid nor settings"):
        Sweep(name="s", mirrors="t")
    with pytest.raises(ValueError, match="names settings twice"):
        Sweep(name="s", mirrors="t", settings=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValueError, match="unknown sweep 'nope'"):
        load_sweep("nope")
    bad = Sweep(name="s", mirrors="t", grid={"teacher.epochs": [0]})
    with pytest.raises(ValueError, match="setting 'epochs=0'"):
        setting_configs(bad, str(tmp_path), preset="tiny")
