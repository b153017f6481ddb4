"""The CLI's light commands and the config they print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from motionfit.cli import main
from motionfit.config import load_config, nested_overrides, preset_names
from motionfit.storage.layout import RunLayout
from motionfit.storage.lock import holding
from motionfit.tasks.methods import METHODS

HEAVY_MODULES = ("torch", "torchvision", "cv2", "scipy", "sklearn")

PROBE = """
import contextlib, io, json, sys
from motionfit.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})))
"""


def _heavy_modules_loaded(*argv: str) -> list[str]:
    script = PROBE.format(heavy=set(HEAVY_MODULES))
    result = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("config", "--preset", "tiny", "--set", "teacher.epochs=3"),
        ("status", "RUN_ROOT"),
    ],
)
def test_light_commands_import_no_torch_opencv_scipy_or_sklearn(
    argv: tuple[str, ...], tmp_path: Path
) -> None:
    run_root = tmp_path / "run"
    manifest = pd.DataFrame({"video_id": ["a"], "dataset": ["target"], "status": ["ok"], "error": [None]})
    run_root.mkdir()
    manifest.to_parquet(run_root / "manifest.parquet")
    argv = tuple(str(run_root) if arg == "RUN_ROOT" else arg for arg in argv)
    assert _heavy_modules_loaded(*argv) == []


def test_config_prints_the_resolved_config_as_yaml_that_loads_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("decode:\n  short_side: 96\n")
    main(["config", "--preset", "tiny", "--overlay", str(overlay), "--set", "flow.lambda=0.2"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["decode"]["short_side"] == 96
    assert printed["flow"]["lambda"] == 0.2
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(printed))
    assert load_config(path) == load_config(preset="tiny", overrides=printed)


def test_config_rejects_an_invalid_value_and_a_file_with_a_preset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "--preset", "tiny", "--set", "teacher.epochs=0", "--set", "methods=[teachr]"]) == 2
    error = capsys.readouterr().err.splitlines()
    assert error[:3] == [
        "motionfit: error: invalid config:",
        "- methods: methods must name distinct methods, at least one, from "
        + ", ".join(METHODS)
        + "; got ['teachr'] (unknown: teachr)",
        "- teacher.epochs: Input should be greater than or equal to 1",
    ]
    assert len(error) == 4 and "-v config" in error[3], "one line per problem and a hint, no traceback"
    with pytest.raises(ValueError, match="epochs"):
        main(["-v", "config", "--preset", "tiny", "--set", "teacher.epochs=0"])
    assert main(["config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file" in capsys.readouterr().err
    path = tmp_path / "config.yaml"
    path.write_text("name: mine\n")
    with pytest.raises(SystemExit, match="not both"):
        main(["config", str(path), "--preset", "tiny"])


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_resolves(preset: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["config", "--preset", preset])
    assert yaml.safe_load(capsys.readouterr().out)["methods"]


@pytest.mark.slow
def test_a_run_refused_by_its_data_prints_the_problems_once_without_a_traceback(
    prefect_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--preset", "tiny", "--run-root", str(tmp_path / "run"), "--until", "ingest"]
    overrides = [f"synth_root={tmp_path / 'data'}", "synth.n_source_per_class=0", "synth.n_test_per_class=1"]
    assert main([*argv, *(part for item in overrides for part in ("--set", item))]) == 2
    captured = capsys.readouterr()
    error = captured.err.splitlines()
    assert error[0].startswith("motionfit: error: the videos of") and error[1].startswith(
        "- no readable source"
    )
    assert "Traceback" not in captured.err + captured.out and len(error) == 4


def test_a_second_run_on_a_run_root_in_use_is_refused_naming_the_holder(
    prefect_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = RunLayout.at(tmp_path / "run")
    argv = ["run", "--preset", "tiny", "--run-root", layout.root, "--until", "ingest"]
    with holding(layout.lock) as holder:
        assert main([*argv, "--set", f"synth_root={tmp_path / 'data'}"]) == 2
    error = capsys.readouterr().err.splitlines()
    assert error[0].startswith("motionfit: error: the run root is in use by another run: ")
    assert f"PID {holder.pid}, since {holder.since}" in error[0] and len(error) == 2
    assert not Path(layout.run_config).exists() and not Path(layout.manifest).exists(), "nothing written"


def test_dotted_overrides_nest_and_merge_like_set_arguments() -> None:
    nested = nested_overrides(
        {"teacher.epochs": 5, "teacher": {"lr": 0.1}, "runtime.seed": 2, "methods": ["scratch"]}
    )
    assert nested == {"teacher": {"epochs": 5, "lr": 0.1}, "runtime": {"seed": 2}, "methods": ["scratch"]}
    config = load_config(preset="tiny", overrides=nested)
    assert (config.teacher.epochs, config.teacher.lr, config.runtime.seed) == (5, 0.1, 2)
    with pytest.raises(ValueError, match=r"'teacher\.epochs\.x' sets a field inside 'epochs'"):
        nested_overrides({"teacher.epochs": 5, "teacher.epochs.x": 1})
