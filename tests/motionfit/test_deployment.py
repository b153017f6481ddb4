"""The deployments' pull step: it enters the checkout or says at once which setting is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from motionfit.deployment import HOME_ENVIRONMENT, enter_project

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _keep_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(os.getcwd())
    monkeypatch.delenv(HOME_ENVIRONMENT, raising=False)


def test_the_pull_step_enters_the_checkout_named_by_the_variable_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert enter_project(str(ROOT)) == {"directory": str(ROOT)} and Path.cwd() == ROOT
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(HOME_ENVIRONMENT, str(ROOT))
    assert enter_project(str(tmp_path)) == {"directory": str(ROOT)}, "the image's MOTIONFIT_HOME comes first"


def test_a_missing_or_wrong_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match=r"set the Prefect variable motionfit_home .* or MOTIONFIT_HOME"):
        enter_project("")  # what Prefect passes for a variable that is not set
    with pytest.raises(
        RuntimeError, match=r"\(Prefect variable motionfit_home\) is not a motionfit checkout"
    ):
        enter_project(str(tmp_path))
    monkeypatch.setenv(HOME_ENVIRONMENT, str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match=r"missing \(environment variable MOTIONFIT_HOME\) is not"):
        enter_project(str(ROOT))
    assert Path.cwd() != tmp_path


def test_every_deployment_pulls_through_the_step_and_takes_overrides() -> None:
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (step,) = project["pull"]
    assert step == {
        "motionfit.deployment.enter_project": {"directory": "{{ prefect.variables.motionfit_home }}"}
    }
    from motionfit.flows.pipeline import deployment_flow

    assert "overrides" in deployment_flow.parameters.properties
    for deployment in project["deployments"]:
        assert deployment["entrypoint"] == "flows/pipeline.py:deployment_flow"
        assert "pull" not in deployment, deployment["name"]
