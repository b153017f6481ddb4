"""Sweeps: a grid or list of config overrides run as one flow, each setting with its seeds, into one table.

A sweep is a YAML file (the shipped ones are ``motionfit/sweeps/<name>.yaml``)::

    mirrors: MotionFit poster, pseudo-label granularity     # the seed table it reproduces
    methods: [scratch, motionfit]                             # of every setting (default: the config's)
    base: {pseudo_label.clips_per_video: 4}                   # overrides of every setting
    grid: {pseudo_label.level: [video, clip]}                 # settings: the product of these values
    settings:                                                 # or, and, named settings
      - {name: no-lmcl, set: {mscl.lmcl_weight: 0.0}}
    seeds: [0]                                                # runtime.seed of each setting's runs
    metrics: [top1]                                           # the table's columns, per method

Overrides are dotted field paths, as ``--set`` takes them. A setting's config is: the preset or config file,
the sweep's ``base``, the user's ``--set``, then the setting's own overrides and seed.
"""

from __future__ import annotations

import itertools
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from motionfit.config import PipelineConfig, deep_merge, load_config, nested_overrides, packaged_names


class Setting(BaseModel):
    """One point of a sweep: a ``name`` (its row and its folder) and the overrides that make it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    set: dict[str, Any] = Field(default_factory=dict)


class Sweep(BaseModel):
    """A sweep definition (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    mirrors: str = Field(description="The seed table (paper, table) the sweep reproduces.")
    methods: tuple[str, ...] | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    settings: list[Setting] = Field(default_factory=list)
    seeds: tuple[int, ...] = (0,)
    metrics: tuple[str, ...] = ("top1",)

    @model_validator(mode="after")
    def _has_settings(self) -> Sweep:
        if not self.grid and not self.settings:
            raise ValueError(f"sweep {self.name!r} has neither a grid nor settings")
        names = [setting.name for setting in self.expanded()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"sweep {self.name!r} names settings twice: {repeated}")
        if not self.seeds:
            raise ValueError(f"sweep {self.name!r} has no seeds")
        return self

    def expanded(self) -> list[Setting]:
        """The grid's settings (named ``field=value,...`` by the last part of each path), then the listed
        ones."""
        keys = list(self.grid)
        grid = []
        for values in itertools.product(*(self.grid[key] for key in keys)) if keys else ():
            name = ",".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in zip(keys, values, strict=True))
            grid.append(Setting(name=name, set=dict(zip(keys, values, strict=True))))
        return grid + list(self.settings)

    def varied(self) -> list[str]:
        """Every field path a setting sets, in order of first appearance: the table's setting columns."""
        return list(dict.fromkeys(key for setting in self.expanded() for key in setting.set))


def _short(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def setting_folder(setting: str, seed: int) -> str:
    """The folder name of a setting's run with ``seed``: its name made safe for paths and object keys."""
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", setting).strip("_") or "setting"
    return f"{safe}-seed{seed}"


def sweep_names() -> list[str]:
    return packaged_names("sweeps")


def load_sweep(name_or_file: str | Path) -> Sweep:
    """A shipped sweep by name, or a sweep YAML file (its name: the file's stem unless it sets one)."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"sweep file {path} does not exist")
        text, name = path.read_text(), path.stem
    else:
        shipped = resources.files("motionfit") / "sweeps" / f"{name_or_file}.yaml"
        if not shipped.is_file():
            raise ValueError(f"unknown sweep {name_or_file!r}; shipped sweeps: {', '.join(sweep_names())}")
        text, name = shipped.read_text(), str(name_or_file)
    content = yaml.safe_load(text) or {}
    if not isinstance(content, dict):
        raise ValueError(f"sweep {name_or_file} must be a mapping, got {type(content).__name__}")
    return Sweep.model_validate({"name": name, **content})


def setting_configs(
    sweep: Sweep,
    run_root: str,
    source: str | Path | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[tuple[Setting, int, PipelineConfig]]:
    """Every (setting, seed, config) of ``sweep`` on ``source`` or ``preset`` with the user's nested
    ``overrides``; each run's root is ``<run_root>/settings/<setting>-seed<seed>``."""
    from motionfit.storage import fs

    runs = []
    for setting in sweep.expanded():
        for seed in sweep.seeds:
            values = deep_merge(nested_overrides(sweep.base), overrides or {})
            values = deep_merge(values, nested_overrides(setting.set))
            values["runtime"] = {**values.get("runtime", {}), "seed": seed}
            values["run_root"] = fs.join(run_root, "settings", setting_folder(setting.name, seed))
            values["name"] = f"{sweep.name}: {setting.name}"
            if sweep.methods is not None:
                values["methods"] = list(sweep.methods)
            try:
                config = load_config(source, preset, values)
            except ValueError as error:
                raise ValueError(f"sweep {sweep.name!r}, setting {setting.name!r}: {error}") from error
            runs.append((setting, seed, config))
    return runs
