"""How the flows execute: the local Dask cluster a run starts."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from motionfit.flows.execution import build_task_runner
from motionfit.runtime import RuntimeConfig

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")  # a dependency of distributed


def _listening_hosts(port: int) -> set[str]:
    """The local addresses on which this process listens on TCP ``port``."""
    connections = psutil.Process().net_connections(kind="tcp")
    return {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_the_local_dask_cluster_listens_on_the_loopback_interface_only() -> None:
    runner = build_task_runner(RuntimeConfig(task_runner="dask", max_workers=1))
    with distributed.LocalCluster(**runner.cluster_kwargs) as cluster:
        scheduler, dashboard = urlparse(cluster.scheduler_address), urlparse(cluster.dashboard_link)
        assert scheduler.hostname == "127.0.0.1"
        assert _listening_hosts(dashboard.port) == {"127.0.0.1"}, "the dashboard must not listen on 0.0.0.0"
        assert _listening_hosts(scheduler.port) == {"127.0.0.1"}
        assert len(cluster.workers) == 1
