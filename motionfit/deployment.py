"""The pull step of the deployments (prefect.yaml): enter the motionfit checkout that a flow run runs from."""

from __future__ import annotations

import logging
import os
from pathlib import Path

HOME_VARIABLE = "motionfit_home"
"""The Prefect variable that names the checkout on the workers (``prefect variable set motionfit_home P``)."""
HOME_ENVIRONMENT = "MOTIONFIT_HOME"
"""The environment variable that names it inside the motionfit image (its Dockerfile sets it)."""
ENTRY_FILE = Path("flows") / "pipeline.py"


def enter_project(directory: str | None = None) -> dict[str, str]:
    """Change the working directory to the motionfit checkout: ``MOTIONFIT_HOME`` when the environment sets
    it (the image does), else ``directory`` (prefect.yaml passes the Prefect variable ``motionfit_home``).

    Raises ``RuntimeError`` naming both when neither is set, or the one used when it is no checkout (has no
    flows/pipeline.py), before Prefect loads the flow from a wrong directory."""
    source, path = (
        (f"environment variable {HOME_ENVIRONMENT}", os.environ[HOME_ENVIRONMENT])
        if os.environ.get(HOME_ENVIRONMENT)
        else (f"Prefect variable {HOME_VARIABLE}", directory or "")
    )
    if not path:
        raise _reported(
            "the deployment does not know where motionfit is on this worker: set the Prefect variable "
            f"{HOME_VARIABLE} to the checkout (prefect variable set {HOME_VARIABLE} /path/to/motionfit) or "
            f"{HOME_ENVIRONMENT} in the worker's environment (the motionfit image sets it)"
        )
    home = Path(path).expanduser()
    if not (home / ENTRY_FILE).is_file():
        raise _reported(f"{home} ({source}) is not a motionfit checkout: it has no {ENTRY_FILE}")
    os.chdir(home)
    return {"directory": str(home)}


def _reported(message: str) -> RuntimeError:
    """The error, logged first to the flow run's logs in the UI (Prefect sends a failed pull step's exception
    to the worker's terminal only)."""
    flow_run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run_id:
        logging.getLogger("prefect.flow_runs").error(message, extra={"flow_run_id": flow_run_id})
    return RuntimeError(message)
