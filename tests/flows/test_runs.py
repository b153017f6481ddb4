"""The root flow runs of a run root, and the runs a killed process left unfinished."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Crashed, Running

from motionfit.flows.runs import crash_stale_runs, record_root_run, recorded_runs
from motionfit.status import last_flow_run
from motionfit.storage.layout import RunLayout


@flow
def stage() -> None: ...


@task
def batch() -> None: ...


@flow
def root(run_root: str) -> UUID | None:
    return record_root_run(RunLayout.at(run_root))


def _leave_running(client, parent: UUID) -> tuple[UUID, UUID]:
    """A subflow run and a task run under ``parent``, both Running, as a SIGKILL leaves them."""
    link = client.create_task_run(batch, parent, "stage-link", state=Running())
    subflow = client.create_flow_run(stage, parent_task_run_id=link.id, state=Running())
    batch_run = client.create_task_run(batch, subflow.id, "0", state=Running())
    return subflow.id, batch_run.id


def test_a_rerun_marks_what_a_killed_run_left_running_as_crashed(prefect_server, tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    killed = root(str(tmp_path))
    with get_client(sync_client=True) as client:
        stale = _leave_running(client, killed)
        client.set_flow_run_state(killed, Crashed(message="worker: exit code -9"), force=True)
        other = client.create_flow_run(root, state=Running())  # a run of another root: never touched
        untouched = _leave_running(client, other.id)

        abandoned = root(str(tmp_path))  # its worker died too: the server still says Running
        left = _leave_running(client, abandoned)
        client.set_flow_run_state(abandoned, Running(), force=True)

        rerun = root(str(tmp_path))
        assert [r["id"] for r in recorded_runs(layout)] == [str(killed), str(abandoned), str(rerun)]
        assert crash_stale_runs(layout, rerun) == 7  # 2 x (stage link, subflow, batch) and the abandoned root
        assert crash_stale_runs(layout, rerun) == 0
        assert client.read_flow_run(abandoned).state.type.value == "CRASHED"
        assert client.read_flow_run(left[0]).state.type.value == "CRASHED"
        assert client.read_flow_run(stale[0]).state.type.value == "CRASHED"
        assert client.read_task_run(stale[1]).state.type.value == "CRASHED"
        assert client.read_flow_run(untouched[0]).state.type.value == "RUNNING"
        assert client.read_task_run(untouched[1]).state.type.value == "RUNNING"


def test_status_names_the_last_flow_run(prefect_server, tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    assert last_flow_run(layout) is None
    run_id = root(str(tmp_path))
    line = last_flow_run(layout)
    assert line.startswith("last Prefect flow run: ") and str(run_id) in line
    assert line.endswith(": Completed")
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert "set PREFECT_API_URL to it" in last_flow_run(layout)


def test_every_page_of_runs_is_read() -> None:
    from motionfit.flows import runs

    rows = list(range(2 * runs.PAGE + 5))

    def read(limit: int, offset: int, **filters) -> list[int]:
        assert filters == {"task_run_filter": "f"}
        return rows[offset : offset + limit]

    assert runs._read_all(read, task_run_filter="f") == rows
