"""Training flows (GPU stages, CPU without one): teacher, pseudo-labels, students, fine-tuning."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel

from motionfit.config import PipelineConfig
from motionfit.flows.artifacts import LiveTable, publish_table, run_key
from motionfit.flows.execution import content_fingerprint, fingerprint, stage_task_options
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import load_manifest
from motionfit.storage.tables import table_exists
from motionfit.tasks.methods import METHODS, TEACHER_STAGE, Method, ordered
from motionfit.tasks.training.config import (
    FinetuneConfig,
    PseudoLabelConfig,
    StudentConfig,
    TeacherConfig,
)
from motionfit.tasks.training.finetune import CODE_VERSION as FINETUNE_CODE_VERSION
from motionfit.tasks.training.finetune import finetune
from motionfit.tasks.training.launch import TrainFn, train_in_processes
from motionfit.tasks.training.pseudo_labels import CODE_VERSION as PSEUDO_LABEL_CODE_VERSION
from motionfit.tasks.training.pseudo_labels import generate_pseudo_labels, pseudo_label_accuracy
from motionfit.tasks.training.students.trainer import CODE_VERSION as STUDENT_CODE_VERSION
from motionfit.tasks.training.students.trainer import DATA_PARALLEL_OBJECTIVES, train_student
from motionfit.tasks.training.supervised_labels import write_supervised_labels
from motionfit.tasks.training.teacher import CODE_VERSION as TEACHER_CODE_VERSION
from motionfit.tasks.training.teacher import train_teacher

GPU_TAGS = ["gpu"]


def seeded(section: BaseModel, config: PipelineConfig) -> Any:
    """``section`` with its seed offset by the run's seed (``motionfit run --seed N``)."""
    return section.model_copy(update={"seed": section.seed + config.runtime.seed})


def _epoch_table(layout: RunLayout, stage: str) -> LiveTable:
    return LiveTable(run_key(layout.root, stage, "epochs"), f"Per-epoch metrics of {stage}")


def _store_fingerprint(layout: RunLayout, stage: str) -> Any:
    markers = layout.markers(stage)
    return sorted(markers.identities(markers.committed_ids()).items())


def _manifest_fingerprint(layout: RunLayout) -> Any:
    manifest = load_manifest(layout)
    return manifest[["video_id", "label_index", "split"]].astype(str).values.tolist()


def _train(
    train: TrainFn, run_root: str, epochs_of: str, device: str, processes: int, **arguments: Any
) -> dict[str, Any]:
    """``train(layout=..., manifest=..., **arguments)`` on ``processes`` data-parallel processes, its epochs
    in the epoch table of stage ``epochs_of``."""
    layout = RunLayout.at(run_root)
    on_epoch_end = _epoch_table(layout, epochs_of).append
    manifest = load_manifest(layout)
    return train_in_processes(
        train, processes, device, on_epoch_end, layout=layout, manifest=manifest, **arguments
    )


@task(name="teacher-train", tags=GPU_TAGS)
def teacher_task(
    run_root: str, config: TeacherConfig, device: str, inputs: str, processes: int = 1
) -> dict[str, Any]:
    """Train the flow teacher on the labelled target (MotionFit's multi-clip loss) on ``processes``
    data-parallel processes; resumable."""
    return _train(
        train_teacher,
        run_root,
        TEACHER_STAGE,
        device,
        processes,
        config=config,
        stage=TEACHER_STAGE,
        data_key=inputs,
    )


@task(name="pseudo-label", tags=GPU_TAGS)
def pseudo_label_task(run_root: str, config: PseudoLabelConfig, device: str, inputs: str) -> dict[str, Any]:
    """Clip-level teacher logits on every unlabelled video; accuracy against held-back labels where known."""
    layout = RunLayout.at(run_root)
    manifest = load_manifest(layout)
    table = generate_pseudo_labels(layout, manifest, config, device)
    accuracy = pseudo_label_accuracy(table, manifest)
    publish_table(
        run_key(layout.root, "pseudo-label-accuracy"),
        _as_rows(accuracy),
        "Pseudo-labels against held-back source labels",
    )
    return {"clips": len(table), **accuracy}


@task(name="student-train", tags=GPU_TAGS)
def student_task(
    run_root: str, config: StudentConfig, stage: str, device: str, inputs: str, processes: int = 1
) -> dict[str, Any]:
    """Train an RGB student (pseudo-labels, IDT-prior Local Aggregation, CMPL, MERS/MARS ...) on
    ``processes`` data-parallel processes; resumable."""
    return _train(
        train_student, run_root, stage, device, processes, config=config, stage=stage, data_key=inputs
    )


@task(name="finetune", tags=GPU_TAGS)
def finetune_task(
    run_root: str,
    config: FinetuneConfig,
    init: str | None,
    stage: str,
    device: str,
    inputs: str,
    processes: int = 1,
) -> dict[str, Any]:
    """Fine-tune ``init`` (None: train from scratch) on the labelled target on ``processes`` data-parallel
    processes and score its test split."""
    return _train(
        finetune,
        run_root,
        stage,
        device,
        processes,
        config=config,
        init_checkpoint=init,
        stage_name=stage,
        modality="rgb",
        data_key=inputs,
    )


def _as_rows(values: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame([{"metric": key, "value": value} for key, value in values.items()])


@flow(name="teacher-train")
def teacher_flow(config: PipelineConfig) -> dict[str, Any]:
    """The motion teacher on the flow of the labelled target videos (or the appearance teacher on their
    frames)."""
    layout = RunLayout.at(config.run_root)
    seen = _store_fingerprint(layout, "flow" if config.teacher.modality == "flow" else "decode")
    inputs = fingerprint("teacher", TEACHER_CODE_VERSION, _manifest_fingerprint(layout), seen)
    run = teacher_task.with_options(**stage_task_options(layout, config.runtime))
    section = seeded(config.teacher, config)
    return run(layout.root, section, config.runtime.resolved_device(), inputs, config.runtime.train_processes)


@flow(name="pseudo-label")
def pseudo_label_flow(config: PipelineConfig) -> dict[str, Any]:
    """Clip-level pseudo-labels of the source by the teacher."""
    layout = RunLayout.at(config.run_root)
    inputs = fingerprint(
        "pseudo_label",
        PSEUDO_LABEL_CODE_VERSION,
        _manifest_fingerprint(layout),
        content_fingerprint(layout.checkpoint(config.pseudo_label.teacher_stage)),
    )
    run = pseudo_label_task.with_options(**stage_task_options(layout, config.runtime))
    return run(layout.root, config.pseudo_label, config.runtime.resolved_device(), inputs)


def student_config(method: Method, config: PipelineConfig, layout: RunLayout) -> StudentConfig:
    """The student section of ``method`` (seeded with the run's seed); the supervised bound trains MotionFit's
    recipe on hard held-back labels of the source (the upper bound of the IDT-prior paper's '% sup.')."""
    section = seeded(getattr(config, method.section), config)
    if method.trains_on == "supervised_labels":
        update = {"target_mode": "hard", "pseudo_labels_url": layout.supervised_labels}
        return section.model_copy(update=update)
    return section


def student_inputs(method: Method, section: StudentConfig, layout: RunLayout, frames: Any) -> Any:
    """What a student is trained on, as a fingerprint: the ``frames`` fingerprint, plus its targets' table (or
    the manifest, for CMPL's labelled target and for the objectives that see the unlabelled videos alone; and
    the flow and the teacher of ``section``, for those that regress the teacher's features)."""
    if method.trains_on in ("target", "videos"):
        return fingerprint(
            "student", STUDENT_CODE_VERSION, method.name, frames, _manifest_fingerprint(layout)
        )
    if method.trains_on == "teacher_features":
        return fingerprint(
            "student",
            STUDENT_CODE_VERSION,
            method.name,
            frames,
            _manifest_fingerprint(layout),
            _store_fingerprint(layout, "flow"),
            content_fingerprint(layout.checkpoint(section.teacher_stage)),
        )
    targets = {
        "pseudo_labels": layout.pseudo_labels,
        "clusters": layout.clusters,
        "supervised_labels": layout.supervised_labels,
    }[method.trains_on]
    return fingerprint("student", STUDENT_CODE_VERSION, method.name, frames, content_fingerprint(targets))


@flow(name="student-train")
def student_flow(config: PipelineConfig) -> dict[str, Any]:
    """Self-train the RGB student of every method in ``config.methods`` that has one."""
    logger = get_run_logger()
    layout = RunLayout.at(config.run_root)
    device = config.runtime.resolved_device()
    results = {}
    frames = _store_fingerprint(layout, "decode")
    run = student_task.with_options(**stage_task_options(layout, config.runtime))
    for method in (METHODS[name] for name in ordered(config.methods)):
        if method.objective is None:
            continue
        if method.trains_on == "supervised_labels" and not table_exists(layout.supervised_labels):
            section = getattr(config, method.section)
            write_supervised_labels(
                layout,
                load_manifest(layout),
                config.pseudo_label.clips_per_video,
                section.clip_length,
                section.frame_stride,
            )
        section = student_config(method, config, layout)
        inputs = student_inputs(method, section, layout, frames)
        processes = config.runtime.train_processes
        if processes > 1 and section.objective not in DATA_PARALLEL_OBJECTIVES:
            logger.warning("student %s: objective %s trains in one process", method.name, section.objective)
            processes = 1
        results[method.name] = run(layout.root, section, method.student_stage, device, inputs, processes)
        logger.info("student %s: %s", method.name, results[method.name])
    return results


@flow(name="finetune")
def finetune_flow(config: PipelineConfig) -> dict[str, Any]:
    """Fine-tune every method's student on the labelled target, and train the RGB baseline from scratch."""
    layout = RunLayout.at(config.run_root)
    device = config.runtime.resolved_device()
    section = seeded(config.finetune, config)
    frames = _store_fingerprint(layout, "decode")
    manifest = _manifest_fingerprint(layout)
    run = finetune_task.with_options(**stage_task_options(layout, config.runtime))
    results = {}
    for method in (METHODS[name] for name in ordered(config.methods)):
        if not method.finetuned:
            continue
        init = None if method.init == "random" else layout.checkpoint(method.student_stage)
        inputs = fingerprint(
            "finetune",
            FINETUNE_CODE_VERSION,
            method.name,
            frames,
            manifest,
            init and content_fingerprint(init),
        )
        stage = method.finetune_stage
        processes = config.runtime.train_processes
        results[method.name] = run(layout.root, section, init, stage, device, inputs, processes)
    return results
