"""The pipeline configuration: one typed section per stage, composed, loaded from YAML presets or files.

Each stage defines its own section next to its code (with the papers' defaults documented there); this module
only composes them. ``load_config`` merges, in order: the defaults, a preset
(``motionfit/presets/<name>.yaml``) or a user YAML file, overlays, then explicit overrides.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from motionfit.runtime import RuntimeConfig
from motionfit.tasks.data.decode import DecodeConfig
from motionfit.tasks.data.ingest import DataConfig
from motionfit.tasks.data.synth import SynthConfig
from motionfit.tasks.idt.extractor import IdtConfig
from motionfit.tasks.motion.tvl1 import FlowConfig
from motionfit.tasks.prior.clustering import ClusterConfig
from motionfit.tasks.prior.fisher import FisherConfig
from motionfit.tasks.training.finetune import FinetuneConfig
from motionfit.tasks.training.pseudo_labels import PseudoLabelConfig
from motionfit.tasks.training.students.trainer import StudentConfig
from motionfit.tasks.training.teacher import TeacherConfig

METHODS = ("scratch", "teacher", "motionfit", "idt_la", "supervised")
STAGES = (
    "ingest",
    "decode",
    "flow",
    "idt",
    "fv_fit",
    "fv_encode",
    "cluster",
    "teacher_train",
    "pseudo_label",
    "student_train",
    "finetune",
    "evaluate",
)


class EvaluateConfig(BaseModel):
    """Evaluation protocol (MotionFit / IDT-prior papers; MSCL for the confusion analysis)."""

    model_config = ConfigDict(extra="forbid")

    test_clips: int = Field(5, ge=1, description="Clips per test video, softmax averaged (MotionFit).")
    retrieval_clips: int = Field(10, ge=1, description="Clips per video averaged into a retrieval feature.")
    retrieval_ks: tuple[int, ...] = Field((1, 5, 10, 20, 50), description="Recall@k for clip retrieval.")
    fewshot_shots: tuple[int | Literal["all"], ...] = Field(
        (1, 5, 10, 20, "all"), description="Labelled videos per class for the linear probe."
    )
    fewshot_seeds: tuple[int, ...] = Field((0, 1, 2), description="Seeds of the few-shot samples.")
    confused_pairs: int = Field(
        10, ge=1, description="Most-confused class pairs listed (MSCL supp. Table 2)."
    )
    gradcam_videos: int = Field(4, ge=0, description="Test videos shown with Grad-CAM heat maps.")
    retrieval_examples: int = Field(3, ge=0, description="Queries drawn with their top-3 neighbours.")


class PipelineConfig(BaseModel):
    """Everything a run needs; ``run_root`` is a local path or an fsspec URL."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("run", description="A label for the run, shown in the report.")
    run_root: str = Field("runs/demo", description="Where every intermediate and result is stored.")
    methods: tuple[str, ...] = Field(METHODS, description=f"Methods trained and compared; from {METHODS}.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    synth: SynthConfig | None = Field(
        None, description="When set, the synthetic data set is generated under synth_root before ingestion."
    )
    synth_root: str = Field("runs/data/synthetic", description="Local folder of the generated data set.")
    data: DataConfig = Field(default_factory=DataConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    idt: IdtConfig = Field(default_factory=IdtConfig)
    fisher: FisherConfig = Field(default_factory=FisherConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    pseudo_label: PseudoLabelConfig = Field(default_factory=PseudoLabelConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    idt_student: StudentConfig = Field(
        default_factory=lambda: StudentConfig(objective="local_aggregation"),
        description="The IDT-prior Local Aggregation student (method idt_la).",
    )
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named sections (cache keys, metrics' config hash)."""
        payload = {name: getattr(self, name) for name in sections}
        blob = json.dumps(
            {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in payload.items()},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def preset_names() -> list[str]:
    folder = resources.files("motionfit") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path | Any, what: str) -> dict[str, Any]:
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict):
        raise ValueError(f"{what} must hold a mapping of config sections, got {type(content).__name__}")
    return content


def load_config(
    source: str | Path | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    overlays: list[Path] | None = None,
) -> PipelineConfig:
    """Build a config from a preset name or a YAML file (not both), then YAML ``overlays`` (for example
    deploy/dask-slurm.yaml) merged in order, then ``overrides`` (nested dicts)."""
    if source is not None and preset is not None:
        raise ValueError("give a config file or a preset, not both")
    values: dict[str, Any] = {}
    if preset is not None:
        path = resources.files("motionfit") / "presets" / f"{preset}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(preset_names())}")
        values = _read_yaml(path, f"preset {preset!r}")
    elif source is not None:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = _read_yaml(path, f"config file {path}")
    for overlay in overlays or []:
        if not Path(overlay).is_file():
            raise FileNotFoundError(f"config overlay {overlay} does not exist")
        values = _deep_merge(values, _read_yaml(Path(overlay), f"config overlay {overlay}"))
    values = _deep_merge(values, overrides or {})
    return PipelineConfig.model_validate(values)
