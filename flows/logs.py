"""Stage code's log records in the flow and task runs' logs (the Prefect UI), at INFO."""

from __future__ import annotations

import logging

from prefect.logging.handlers import APILogHandler

from motionfit.flows.artifacts import in_run

STAGE_LOGGER = "motionfit"
"""The standard-library logger (and its children) that the pure stage code under ``tasks/`` logs to."""


class _InRun(logging.Filter):
    """Passes records made inside a Prefect flow or task run, where they have a run to attach to."""

    def filter(self, record: logging.LogRecord) -> bool:
        return in_run()


class StageLogHandler(APILogHandler):
    """Prefect's API log handler for the stage logger: records outside a run are left to the other handlers
    (tests and ``motionfit idt`` call stage code with no run)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.addFilter(_InRun())


def send_stage_logs_to_runs() -> None:
    """Attach :class:`StageLogHandler` to the stage logger of this process, once, and let INFO through.

    Prefect's ``PREFECT_LOGGING_EXTRA_LOGGERS`` does the same but is read when Prefect is imported, which in a
    worker's flow-run process happens before motionfit is; this runs wherever the flows module is imported
    (that process, task-runner processes and Dask workers)."""
    logger = logging.getLogger(STAGE_LOGGER)
    if not any(isinstance(handler, StageLogHandler) for handler in logger.handlers):
        logger.addHandler(StageLogHandler())
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
