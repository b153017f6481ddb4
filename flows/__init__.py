"""Prefect flows: the full pipeline and one flow per stage group."""

from motionfit.flows.logs import send_stage_logs_to_runs

send_stage_logs_to_runs()
