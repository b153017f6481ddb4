"""One training stage on several local processes (one GPU each on CUDA) that train together.

:func:`train_in_processes` starts the workers with ``torch.distributed``'s elastic launcher, the library
behind ``torchrun`` (so a worker sees ``torchrun``'s environment), rendezvous on the loopback interface.
Rank 0's log records and epoch rows come back to the launching process, whose handlers (a Prefect run's logs)
and ``on_epoch_end`` (an epoch table) see them as if the stage ran there; the other ranks log warnings only.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from motionfit.tasks.training import distributed
from motionfit.tasks.training.loop import EpochCallback, resolve_device

STAGE_LOGGER = __name__.split(".")[0]
"""The logger of the stage code, whose records rank 0 sends back."""

TrainFn = Callable[..., dict[str, Any]]
"""A training stage function taking ``device`` and ``on_epoch_end`` keywords (``train_teacher``, ...)."""


def train_in_processes(
    train: TrainFn,
    processes: int,
    device: str | torch.device | None = None,
    on_epoch_end: EpochCallback | None = None,
    **arguments: Any,
) -> dict[str, Any]:
    """``train(device=..., on_epoch_end=..., **arguments)`` on ``processes`` local processes training with
    DistributedDataParallel (in this process when ``processes`` is 1); returns rank 0's result. ``train``
    and ``arguments`` must pickle (module-level functions, plain data)."""
    device = resolve_device(device)
    if processes == 1:
        return train(device=device, on_epoch_end=on_epoch_end, **arguments)
    if device.type == "cuda" and processes > torch.cuda.device_count():
        raise ValueError(
            f"{processes} training processes need as many GPUs; {torch.cuda.device_count()} visible"
        )
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port
        local_addr="127.0.0.1",
        max_restarts=0,
        start_method="spawn",
    )
    events = multiprocessing.get_context("spawn").Queue()
    relay = threading.Thread(target=contextvars.copy_context().run, args=(_relay, events, on_epoch_end))
    relay.start()
    try:
        results = elastic_launch(config, _worker)(train, device.type, events, arguments)
    finally:
        events.put(None)
        relay.join()
    return results[0]


def _relay(events: Any, on_epoch_end: EpochCallback | None) -> None:
    """Hand rank 0's log records to this process's loggers and its epoch rows to ``on_epoch_end``, until
    ``None``."""
    while (event := events.get()) is not None:
        kind, payload = event
        if kind == "log":
            logging.getLogger(payload.name).handle(payload)
        elif on_epoch_end is not None:
            on_epoch_end(payload)


@record
def _worker(
    train: TrainFn, device_type: str, events: Any, arguments: dict[str, Any]
) -> dict[str, Any] | None:
    """One rank: join the process group, train with this rank's device, return the result on rank 0."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    device = distributed.init_from_env(device_type)
    main = distributed.is_main()
    stage_logger = logging.getLogger(STAGE_LOGGER)
    stage_logger.setLevel(logging.INFO if main else logging.WARNING)
    if main:
        stage_logger.addHandler(_EventHandler(events))

    def send_epoch(metrics: dict[str, Any]) -> None:
        events.put(("epoch", metrics))

    try:
        result = train(device=device, on_epoch_end=send_epoch if main else None, **arguments)
    finally:
        distributed.destroy()
    return result if main else None


class _EventHandler(logging.handlers.QueueHandler):
    """Log records, made picklable, as ``("log", record)`` events."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put(("log", record))
