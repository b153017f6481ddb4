"""How the flows execute: the local Dask cluster a run starts, stage task options."""

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
        with distributed.Client(cluster) as client:
            assert set(client.run(_opencv_threads).values()) == {1}, "one OpenCV thread per worker process"


def _opencv_threads() -> int:
    import cv2

    return cv2.getNumThreads()


def test_stage_tasks_retry_transient_errors_only(prefect_server, tmp_path) -> None:
    from prefect import task
    from prefect.states import Failed

    from motionfit.flows.execution import retry_on_transient_errors, stage_task_options
    from motionfit.flows.video_stages import BatchFailedError
    from motionfit.storage.layout import RunLayout

    options = stage_task_options(RunLayout.at(tmp_path), RuntimeConfig(task_retries=3, retry_delay_seconds=5))
    assert options["retries"] == 3 and options["retry_delay_seconds"] == 5

    @task
    def stage_task() -> None: ...

    def retried(error: BaseException) -> bool:
        return retry_on_transient_errors(stage_task, None, Failed(data=error))

    assert retried(ConnectionError("reset by peer")) and retried(TimeoutError("read timed out"))
    assert not retried(BatchFailedError("decode: 1 of 16 videos failed: v1: ValueError: not a video"))
    assert not retried(FileNotFoundError("missing.mp4"))
