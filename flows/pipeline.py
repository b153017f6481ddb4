"""The full MotionFit pipeline as one Prefect flow of stage-group subflows, resumable stage by stage."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import yaml
from prefect import Flow, flow, get_run_logger
from prefect.states import Completed
from prefect.task_runners import TaskRunner

from motionfit.config import STAGES, PipelineConfig, load_config, nested_overrides
from motionfit.flows.credentials import export_storage_secret
from motionfit.flows.evaluation import evaluate_flow
from motionfit.flows.execution import cpu_task_runner
from motionfit.flows.preprocess import decode_flow, ingest_flow, publish_manifest_summary, tvl1_flow
from motionfit.flows.prior import cluster_flow, fv_encode_flow, fv_fit_flow, idt_flow
from motionfit.flows.runs import crash_stale_runs, record_root_run
from motionfit.flows.summary import publish_run_summary
from motionfit.flows.train import finetune_flow, pseudo_label_flow, student_flow, teacher_flow
from motionfit.flows.video_stages import require_failure_fraction
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.lock import holding
from motionfit.tasks.methods import METHODS

STAGE_FLOWS: dict[str, Flow] = {
    "ingest": ingest_flow,
    "decode": decode_flow,
    "flow": tvl1_flow,
    "idt": idt_flow,
    "fv_fit": fv_fit_flow,
    "fv_encode": fv_encode_flow,
    "cluster": cluster_flow,
    "teacher_train": teacher_flow,
    "pseudo_label": pseudo_label_flow,
    "student_train": student_flow,
    "finetune": finetune_flow,
    "evaluate": evaluate_flow,
}
CPU_STAGES = ("decode", "flow", "idt", "fv_encode")
IDT_STAGES = ("idt", "fv_fit", "fv_encode", "cluster")


def selected_stages(
    config: PipelineConfig, until: str | None = None, only: str | None = None, start: str | None = None
) -> list[str]:
    """The stages to run, in DAG order: from ``start`` (default the first) to ``until`` (default the last),
    or ``only`` one. The IDT stages are left out when no method needs the IDT prior."""
    for name in (until, only, start):
        if name is not None and name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    if only is not None:
        return [only]
    first = STAGES.index(start) if start else 0
    last = STAGES.index(until) + 1 if until else len(STAGES)
    if first >= last:
        raise ValueError(f"stage {start!r} comes after {until!r}: nothing to run")
    stages = list(STAGES[first:last])
    if not any(METHODS[name].needs_idt for name in config.methods):
        stages = [stage for stage in stages if stage not in IDT_STAGES]
    return stages


def save_run_config(config: PipelineConfig) -> None:
    """Keep the run's config beside its data (config.yaml), so status and report know what ran."""
    layout = RunLayout.at(config.run_root)
    payload = yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False).encode()
    fs.write_bytes_atomic(layout.run_config, payload)


def run_stage(stage: str, config: PipelineConfig, cpu_runner: TaskRunner | None) -> Any:
    """Run ``stage``'s flow on ``config``; a CPU stage maps its batches on ``cpu_runner``."""
    stage_flow: Flow = STAGE_FLOWS[stage]
    if stage in CPU_STAGES:
        stage_flow = stage_flow.with_options(task_runner=cpu_runner)
    return stage_flow(config)


@flow(name="motionfit-pipeline", log_prints=False)
def pipeline_flow(
    config: PipelineConfig,
    until: str | None = None,
    only: str | None = None,
    start: str | None = None,
    wait: bool = False,
) -> Any:
    """Run the selected stages on ``config`` in DAG order as subflows, holding the run root's lock (another
    run on it is refused, naming its holder, or with ``wait`` waited for), and publish the run summary on
    the run, also when a stage fails. Returns each stage's summary, or a Completed state named "Completed
    with failures" that carries them when videos failed within ``runtime.max_failed_fraction`` (a re-run or
    ``prefect flow-run retry`` retries exactly those)."""
    exported = export_storage_secret(config.runtime.storage_secret)
    if exported:
        get_run_logger().info(
            "storage credentials from Prefect block %s: %s", config.runtime.storage_secret, exported
        )
    layout = RunLayout.at(config.run_root)
    stages = selected_stages(config, until, only, start)
    with holding(layout.lock, wait=wait):
        return _run_stages(config, layout, stages)


def _run_stages(config: PipelineConfig, layout: RunLayout, stages: list[str]) -> Any:
    logger = get_run_logger()
    save_run_config(config)
    current = record_root_run(layout)
    if current is not None:
        crash_stale_runs(layout, current)
    results: dict[str, Any] = {}
    failures: list[str] = []
    state, error = "Running", None
    last_cpu_stage = next((stage for stage in reversed(stages) if stage in CPU_STAGES), None)
    try:
        with ExitStack() as cpu_stages:  # the CPU stages' runner (a Dask cluster) from the first to the last
            cpu_runner: TaskRunner | None = None
            for number, stage in enumerate(stages, start=1):
                logger.info("stage %d/%d: %s", number, len(stages), stage)
                if stage in CPU_STAGES and cpu_runner is None:
                    cpu_runner = cpu_stages.enter_context(cpu_task_runner(config.runtime))
                results[stage] = run_stage(stage, config, cpu_runner)
                if stage == "ingest" or stage in CPU_STAGES:
                    failed = require_failure_fraction(stage, layout, config.runtime.max_failed_fraction)
                    failures += [failed] if failed else []
                if stage == last_cpu_stage:
                    cpu_stages.close()
        state = "Completed with failures" if failures else "Completed"
    except BaseException as exc:
        state, error = f"Failed at {stage}", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if "ingest" in results or any(stage in results for stage in CPU_STAGES):
            publish_manifest_summary(layout)
        publish_run_summary(layout, config.name, stages, state, config.runtime.seed, error)
    if failures:
        return Completed(data=results, name="Completed with failures", message="; ".join(failures))
    return results


@flow(name="motionfit")
def deployment_flow(
    preset: str | None = "tiny",
    config_path: str | None = None,
    run_root: str | None = None,
    seed: int | None = None,
    start: str | None = None,
    until: str | None = None,
    only: str | None = None,
    overrides: dict[str, Any] | None = None,
    wait: bool = False,
) -> Any:
    """Entry point of the deployments: the config from a preset or a YAML file, then ``overrides``
    (``{"teacher.epochs": 5}``, like ``motionfit run --set``), then the stages from ``start`` to ``until``
    (or ``only`` one), as direct subflows of this run (the run a user is sent to shows the summary);
    ``wait``: wait for another run that holds the run root."""
    settings = dict(overrides or {})
    if run_root is not None:
        settings["run_root"] = run_root
    if seed is not None:
        settings["runtime.seed"] = seed
    config = load_config(config_path, None if config_path else preset, nested_overrides(settings))
    return pipeline_flow.fn(config, until=until, only=only, start=start, wait=wait)
