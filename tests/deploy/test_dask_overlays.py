"""The Dask config overlays of deploy/ as a user merges them (``--overlay``): their cluster classes take their
arguments and render the SLURM job and the Kubernetes DaskCluster they would submit; nothing is submitted."""

from __future__ import annotations

import inspect
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest

from motionfit.config import load_config
from motionfit.flows.execution import build_task_runner
from motionfit.runtime import RuntimeConfig

psutil = pytest.importorskip("psutil")  # a dependency of distributed

DEPLOY = Path(__file__).parents[2] / "deploy"


def _runtime(overlay: str) -> RuntimeConfig:
    return load_config(preset="tiny", overlays=[DEPLOY / overlay]).runtime


def _listening_hosts(port: int) -> set[str]:
    connections = psutil.Process().net_connections(kind="tcp")
    return {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_the_slurm_overlay_renders_one_job_of_sixteen_single_threaded_workers() -> None:
    jobqueue = pytest.importorskip("dask_jobqueue")
    runtime = _runtime("dask-slurm.yaml")
    assert runtime.task_runner == "dask" and runtime.dask_cluster_class == "dask_jobqueue.SLURMCluster"
    assert runtime.dask_adapt_kwargs == {"minimum_jobs": 1, "maximum_jobs": 32}  # minimum, maximum: workers
    inspect.signature(jobqueue.SLURMCluster.adapt).bind(None, **runtime.dask_adapt_kwargs)
    with jobqueue.SLURMCluster(**runtime.dask_cluster_kwargs) as cluster:  # a scheduler, no job yet
        script = cluster.job_script()
        assert _listening_hosts(urlparse(cluster.dashboard_link).port) == {"127.0.0.1"}
        assert not cluster.workers
    directives = [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")]
    assert {"-p cpu", "--cpus-per-task=16", "-t 04:00:00", "--exclusive"} <= set(directives)
    assert any(d.startswith("--mem=") for d in directives)
    assert "export OPENCV_FOR_THREADS_NUM=1" in script
    worker = shlex.split(next(line for line in script.splitlines() if "dask_worker" in line))
    assert worker[worker.index("--nworkers") + 1] == "16" and worker[worker.index("--nthreads") + 1] == "1"


def test_the_kubernetes_overlay_renders_a_dask_cluster_of_the_motionfit_image() -> None:
    operator = pytest.importorskip("dask_kubernetes.operator")
    runtime = _runtime("dask-kubernetes.yaml")
    assert runtime.dask_cluster_class == "dask_kubernetes.operator.KubeCluster"
    kwargs = runtime.dask_cluster_kwargs
    assert set(kwargs) <= set(inspect.signature(operator.KubeCluster).parameters), "KubeCluster refuses them"
    rendered = set(inspect.signature(operator.make_cluster_spec).parameters)
    spec = operator.make_cluster_spec(**{key: value for key, value in kwargs.items() if key in rendered})
    assert spec["kind"] == "DaskCluster" and spec["metadata"]["name"] == "motionfit-cpu"
    assert spec["spec"]["worker"]["replicas"] == 8
    (worker,) = spec["spec"]["worker"]["spec"]["containers"]
    assert worker["image"] == kwargs["image"] == spec["spec"]["scheduler"]["spec"]["containers"][0]["image"]
    assert worker["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    assert worker["args"][:2] == ["dask", "worker"], "distributed has no dask-worker command any more"
    assert worker["args"][worker["args"].index("--nthreads") + 1] == worker["resources"]["limits"]["cpu"]
    assert {"name": "OPENCV_FOR_THREADS_NUM", "value": "1"} in worker["env"]
    inspect.signature(operator.KubeCluster.adapt).bind(None, **runtime.dask_adapt_kwargs)


def test_the_existing_cluster_overlay_names_a_scheduler() -> None:
    runtime = _runtime("dask-existing-cluster.yaml")
    assert runtime.task_runner == "dask" and runtime.dask_address.startswith("tcp://")
    assert runtime.dask_cluster_class is None


def test_a_cluster_class_that_cannot_be_imported_is_named() -> None:
    pytest.importorskip("prefect_dask")
    for dotted in ("dask_nowhere.SLURMCluster", "distributed.NoSuchCluster", "SLURMCluster"):
        with pytest.raises(RuntimeError, match=f"runtime.dask_cluster_class '{dotted}' cannot be imported"):
            build_task_runner(RuntimeConfig(task_runner="dask", dask_cluster_class=dotted))


def test_a_cluster_without_a_prefect_server_is_refused() -> None:
    pytest.importorskip("prefect_dask")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(ValueError, match="set PREFECT_API_URL"):
            build_task_runner(RuntimeConfig(task_runner="dask", dask_address="tcp://192.0.2.1:8786"))
