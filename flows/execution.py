"""Task runners, result storage and cache policy: how the flows execute and how their results are reused."""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import Task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL
from prefect.states import State
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from motionfit.flows.results import CheckedLocalFileSystem, CheckedRemoteFileSystem, PlainJSONSerializer
from motionfit.runtime import RuntimeConfig
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.tasks.per_video import inputs_key, is_transient

STAGE_CACHE_POLICY: CachePolicy = TASK_SOURCE + INPUTS
"""A stage task's cache key: its (thin) source code plus every argument. Arguments are small and explicit: the
run root, the stage's config section, the video ids of the batch and :func:`fingerprint` of the stage's code
version and its inputs' content (Prefect's INPUTS policy hashes a path string, not the file, so paths alone
would not change when files do), so a re-run skips exactly the work whose code and inputs did not change."""


def build_task_runner(runtime: RuntimeConfig) -> TaskRunner:
    """The task runner of the CPU stages, chosen by ``runtime.task_runner``."""
    if runtime.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=runtime.max_workers)
    if runtime.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=runtime.max_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as error:
        raise RuntimeError(
            "task_runner 'dask' needs the dask extra: pip install 'motionfit[dask]'"
        ) from error
    if runtime.dask_cluster_class:
        _check_cluster_class(runtime.dask_cluster_class)
    if (runtime.dask_address or runtime.dask_cluster_class) and not PREFECT_API_URL.value():
        raise ValueError(
            "runtime.task_runner 'dask' on a cluster (dask_address or dask_cluster_class) needs a Prefect "
            "server that its workers reach: start one and set PREFECT_API_URL (deploy/README.md); the "
            "embedded server of a command listens on 127.0.0.1 of this machine only"
        )
    if runtime.dask_address:
        return DaskTaskRunner(address=runtime.dask_address)
    if runtime.dask_cluster_class:
        return DaskTaskRunner(
            cluster_class=runtime.dask_cluster_class,
            cluster_kwargs=runtime.dask_cluster_kwargs,
            adapt_kwargs=runtime.dask_adapt_kwargs,
        )
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(runtime))


def _check_cluster_class(dotted: str) -> None:
    """Fail before the run starts, naming the class, when ``dotted`` cannot be imported."""
    module, _, name = dotted.rpartition(".")
    try:
        getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise RuntimeError(
            f"runtime.dask_cluster_class {dotted!r} cannot be imported ({type(error).__name__}: {error}); "
            "install its package: pip install 'motionfit[dask-slurm]' or 'motionfit[dask-kubernetes]'"
        ) from error


@contextmanager
def cpu_task_runner(runtime: RuntimeConfig) -> Iterator[TaskRunner]:
    """The task runner that every CPU stage of one pipeline run uses (:func:`build_task_runner`). A Dask
    cluster that the runner starts (a local one, or ``dask_cluster_class``) is started once here and shared
    by the stages, so a SLURM or Kubernetes cluster's workers are requested once per run, not once per
    stage; it is closed on exit."""
    runner = build_task_runner(runtime)
    if runtime.task_runner != "dask" or runtime.dask_address:
        yield runner
        return
    from prefect_dask import DaskTaskRunner

    with runner:
        yield DaskTaskRunner(address=runner.client.scheduler.address)


def local_cluster_kwargs(runtime: RuntimeConfig) -> dict[str, Any]:
    """The local Dask cluster of a run without an address or cluster class: ``max_workers`` single-threaded
    worker processes, scheduler and dashboard on the loopback interface only (Dask's dashboard listens on
    every interface by default), each worker with :func:`worker_environment`."""
    return {
        "n_workers": runtime.max_workers,
        "processes": True,
        "threads_per_worker": 1,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:8787",  # another free port when that one is taken
        "env": worker_environment(),
    }


def worker_environment() -> dict[str, str]:
    """Environment of the local Dask cluster's worker processes: one OpenCV thread each (OpenCV starts one
    per core in every process otherwise; Dask sets only the BLAS and OpenMP counts), and the Prefect API of
    this process, also a command's embedded server, which the task runs' serialized settings do not name
    (each worker would start a server of its own)."""
    environment = {"OPENCV_FOR_THREADS_NUM": "1"}
    context = FlowRunContext.get()
    api_url = str(context.client.api_url) if context is not None else PREFECT_API_URL.value()
    if api_url:
        environment["PREFECT_API_URL"] = api_url
    return environment


def result_storage(layout: RunLayout) -> CheckedLocalFileSystem | CheckedRemoteFileSystem:
    """Prefect result storage inside the run root (``_prefect/``), shared by every worker that can reach the
    run root; it reads only plain-JSON records (see :mod:`motionfit.flows.results`). Saved as a block named
    after the run root, as Prefect requires of result storage."""
    storage_class = CheckedLocalFileSystem if fs.is_local(layout.root) else CheckedRemoteFileSystem
    storage = storage_class(basepath=layout.prefect_results)
    storage.save("motionfit-results-" + hashlib.sha256(layout.root.encode()).hexdigest()[:12], overwrite=True)
    return storage


def retry_on_transient_errors(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect's ``retry_condition_fn`` of the stage tasks: retry only after a transient error."""
    return isinstance(state.data, BaseException) and is_transient(state.data)


def stage_task_options(layout: RunLayout, runtime: RuntimeConfig) -> dict[str, Any]:
    """Options for ``task.with_options`` that make a stage's results persisted and keyed, and retry it after
    transient errors (``runtime.task_retries``)."""
    return {
        "persist_result": True,
        "cache_policy": STAGE_CACHE_POLICY,
        "result_storage": result_storage(layout),
        "result_serializer": PlainJSONSerializer(),
        "retries": runtime.task_retries,
        "retry_delay_seconds": runtime.retry_delay_seconds,
        "retry_condition_fn": retry_on_transient_errors,
    }


def fingerprint(stage: str, code_version: int, *parts: Any) -> str:
    """The cache-key input of a stage task: a short hash of the stage's name, its code version (the
    ``CODE_VERSION`` of its module) and its inputs' fingerprints ``parts``."""
    return inputs_key(stage, code_version, *parts)


def file_fingerprint(path: str) -> tuple[str, int, float] | tuple[str, None, None]:
    """(path, size, mtime) of an input file from outside the run root (a source video: hashing every video
    on every run would read the whole data set), or (path, None, None) when it is missing."""
    filesystem, inner = fs.resolve(path)
    try:
        info = filesystem.info(inner)
    except FileNotFoundError:
        return (path, None, None)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
    return (path, int(info.get("size") or 0), float(getattr(mtime, "timestamp", lambda: mtime)()))


def content_fingerprint(url: str) -> tuple[str, int, str] | tuple[str, None, None]:
    """(url, size, SHA-256 prefix) of an output in the run root (a table, a model, a checkpoint), so that an
    identical rewrite invalidates nothing downstream; (url, None, None) when it is missing. The hash is
    kept per (url, size, mtime) for the life of the process."""
    stat = file_fingerprint(url)
    if stat[1] is None:
        return (url, None, None)
    return (url, stat[1], _content_digest(*stat))


@functools.lru_cache(maxsize=256)
def _content_digest(url: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    filesystem, inner = fs.resolve(url)
    with filesystem.open(inner, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]
