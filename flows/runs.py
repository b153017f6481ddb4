"""The Prefect flow runs of a run root: which ran on it, and the runs a crash left "Running" in the UI."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL
from prefect.states import Crashed

from motionfit.storage import fs
from motionfit.storage.layout import RunLayout

logger = logging.getLogger(__name__)

UNFINISHED = [StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
KEPT_RUNS = 50
"""Root flow runs remembered per run root (the newest)."""
PAGE = 200
"""Runs per API read (the server's default limit)."""


def recorded_runs(layout: RunLayout) -> list[dict[str, Any]]:
    """The root flow runs that ran on the run root, oldest first: ``id``, ``name``, ``api_url``, ``started``
    of each."""
    return fs.read_json(layout.flow_runs) if fs.exists(layout.flow_runs) else []


def record_root_run(layout: RunLayout) -> UUID | None:
    """Add the calling flow run to the run root's ``flow_runs.json``; returns its id (``None`` outside a
    run)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    run = context.flow_run
    runs = [r for r in recorded_runs(layout) if r["id"] != str(run.id)]
    runs.append(
        {
            "id": str(run.id),
            "name": run.name,
            "api_url": PREFECT_API_URL.value(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    fs.write_json_atomic(layout.flow_runs, runs[-KEPT_RUNS:])
    return run.id


def _read_all(read: Callable[..., list[Any]], **filters: Any) -> list[Any]:
    """Every run ``read`` (a client's ``read_flow_runs`` or ``read_task_runs``) finds, page by page (a stage
    of 240k videos leaves thousands of Pending batch task runs)."""
    found: list[Any] = []
    while True:
        page = read(**filters, limit=PAGE, offset=len(found))
        found += page
        if len(page) < PAGE:
            return found


def _unfinished_children(client: SyncPrefectClient, parents: list[UUID]) -> tuple[list[Any], list[Any]]:
    """The unfinished subflow runs (at any depth) and task runs under the flow runs ``parents``."""
    flows: list[Any] = []
    tasks: list[Any] = []
    level = parents
    while level:
        tasks += _read_all(
            client.read_task_runs,
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=level),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED)),
            ),
        )
        children = _read_all(
            client.read_flow_runs,
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=level)),
        )
        flows += [run for run in children if run.state_type in UNFINISHED]
        level = [run.id for run in children]
    return flows, tasks


def crash_stale_runs(layout: RunLayout, current: UUID) -> int:
    """Mark as Crashed what killed processes left unfinished on this run root: the earlier root runs recorded
    for it that are still unfinished (the caller holds the run-root lock, so they are dead), and every
    unfinished subflow and task run under those and under the ``current`` root run (from its earlier attempt:
    this one has started none yet). Returns how many runs were marked."""
    with get_client(sync_client=True) as client:
        earlier = [UUID(r["id"]) for r in recorded_runs(layout) if r["id"] != str(current)]
        roots = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=earlier)))
        stale_roots = [run for run in roots if run.state_type in UNFINISHED]
        flows, tasks = _unfinished_children(client, [current, *(run.id for run in roots)])
        message = "its process ended without reporting a final state (marked when the run root was run again)"
        for run in [*stale_roots, *flows]:
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        for run in tasks:
            client.set_task_run_state(run.id, Crashed(message=message), force=True)
    marked = len(stale_roots) + len(flows) + len(tasks)
    if marked:
        logger.warning(
            "%s: marked %d flow runs and %d task runs that an earlier crash left unfinished as Crashed",
            layout.root,
            len(stale_roots) + len(flows),
            len(tasks),
        )
    return marked


def root_flow_run_state(api_url: str, flow_run_id: str) -> str | None:
    """The state name of a flow run on the server at ``api_url``; ``None`` when it cannot be read."""
    from prefect.settings import temporary_settings

    try:
        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            return client.read_flow_run(UUID(flow_run_id)).state_name
    except Exception as error:  # status must work with no server, or another one
        logger.debug("flow run %s on %s: %s", flow_run_id, api_url, error)
        return None
