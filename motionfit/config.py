"""The pipeline configuration: one typed section per stage, composed, loaded from YAML presets or files.

Each stage family defines its sections in its own ``config`` module (the papers' defaults documented there,
nothing heavier than pydantic imported); this module composes them. ``load_config`` merges, in order: the
defaults, a preset (``motionfit/presets/<name>.yaml``) or a user YAML file, overlays, then explicit overrides.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from motionfit.runtime import RuntimeConfig
from motionfit.tasks.data.config import DataConfig, DecodeConfig, SynthConfig
from motionfit.tasks.evaluation.config import EvaluateConfig
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.methods import DEFAULT_METHODS, METHODS
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.prior.config import ClusterConfig, FisherConfig
from motionfit.tasks.training.config import FinetuneConfig, PseudoLabelConfig, StudentConfig, TeacherConfig

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


VIDEO_LOCATIONS = (
    "target_format",
    "target_video_root",
    "target_splits_dir",
    "target_csv",
    "split",
    "source_format",
    "source_video_root",
    "source_csv",
    "source_heldout_labels",
    "human_boxes_dir",
)
"""The ``data`` fields that say which videos a run reads (the others say how it splits them)."""


def _student_section(method: str, description: str) -> Any:
    """The config field of ``method``'s student section, defaulting to the method's section defaults."""
    return Field(
        default_factory=lambda: StudentConfig(**METHODS[method].section_defaults), description=description
    )


class PipelineConfig(BaseModel):
    """Everything a run needs; ``run_root`` is a local path or an fsspec URL."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("run", description="A label for the run, shown in the report.")
    run_root: str = Field("runs/demo", description="Where every intermediate and result is stored.")
    methods: tuple[str, ...] = Field(
        DEFAULT_METHODS, description=f"Methods trained and compared, at least one of {', '.join(METHODS)}."
    )
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
    motionfit: StudentConfig = _student_section(
        "motionfit", "The MotionFit student on the teacher's pseudo-labels; the supervised bound's recipe."
    )
    mscl: StudentConfig = _student_section(
        "mscl", "MotionFit's student with MSCL's motion differential sampling and local motion contrast."
    )
    idt_la: StudentConfig = _student_section("idt_la", "The IDT-prior Local Aggregation student.")
    video_ir: StudentConfig = _student_section("video_ir", "Video instance recognition (no prior).")
    video_la: StudentConfig = _student_section(
        "video_la", "Video Local Aggregation on k-means of the network's own embeddings (no IDT prior)."
    )
    cmpl: StudentConfig = _student_section(
        "cmpl", "CMPL's primary and auxiliary networks (semi-supervised on the target)."
    )
    mers: StudentConfig = _student_section(
        "mers", "MERS: an RGB network regressing the flow teacher's features on the labelled target."
    )
    mars: StudentConfig = _student_section(
        "mars", "MARS: MERS's feature regression beside cross-entropy on the labelled target, scored as is."
    )
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @model_validator(mode="before")
    @classmethod
    def _section_defaults_from_the_methods(cls, values: Any) -> Any:
        """A student section takes its method's defaults (tasks/methods.py: the objective, MSCL's options)
        for the fields a config leaves out."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        for name in {m.section for m in METHODS.values() if m.section is not None}:
            section = values.get(name)
            if isinstance(section, dict):
                values[name] = {**METHODS[name].section_defaults, **section}
        return values

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in methods if name not in METHODS]
        if unknown or not methods or len(set(methods)) != len(methods):
            raise ValueError(
                f"methods must name distinct methods, at least one, from {', '.join(METHODS)}; got "
                f"{list(methods)}" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        return methods

    @model_validator(mode="after")
    def _synth_or_own_videos(self) -> PipelineConfig:
        """With ``synth`` set the run reads the generated data set, so ``data`` must name no other videos."""
        if self.synth is None:
            return self
        defaults = DataConfig()
        named = [name for name in VIDEO_LOCATIONS if getattr(self.data, name) != getattr(defaults, name)]
        if named:
            raise ValueError(
                f"synth and data.{', data.'.join(named)} are both set: a run with synth reads the generated "
                "data set and would ignore them; set synth to null (--set synth=null) to use your own videos"
            )
        return self

    @model_validator(mode="after")
    def _flow_teacher_for_its_features(self) -> PipelineConfig:
        """LMCL, MERS and MARS learn from the flow teacher's features: an appearance teacher has none."""
        if self.teacher.modality == "flow":
            return self
        sections = {m.name: getattr(self, m.section) for m in map(METHODS.get, self.methods) if m.section}
        users = [
            name
            for name, section in sections.items()
            if section.lmcl_weight > 0 or METHODS[name].trains_on == "teacher_features"
        ]
        if users:
            raise ValueError(
                f"teacher.modality rgb: {', '.join(users)} learn from a flow teacher's features; use "
                "teacher.modality flow or leave them out"
            )
        return self

    @model_validator(mode="after")
    def _feature_regression_matches_the_teacher(self) -> PipelineConfig:
        """MERS and MARS regress the teacher's features: their network must have the teacher's shape."""
        shape = ("arch", "width_multiplier", "layers")
        for method in (METHODS[name] for name in self.methods):
            section = getattr(self, method.section) if method.trains_on == "teacher_features" else None
            differ = [f for f in shape if section and getattr(section, f) != getattr(self.teacher, f)]
            if differ:
                raise ValueError(
                    f"{method.name} regresses the teacher's features, but {method.section}."
                    f"{f', {method.section}.'.join(differ)} differ from teacher's: give them the teacher's"
                )
        return self

    @model_validator(mode="after")
    def _sections_train_their_methods_objective(self) -> PipelineConfig:
        for method in METHODS.values():
            if method.section is not None and getattr(self, method.section).objective != method.objective:
                raise ValueError(
                    f"{method.section}.objective is {getattr(self, method.section).objective!r}, but the "
                    f"{method.name} method trains {method.objective!r}"
                )
        return self


def changed_label_settings(configs: Iterable[PipelineConfig]) -> tuple[str, ...]:
    """The config keys a method's label names (``Method.label_settings``) that one of ``configs`` sets away
    from the default config's value: such a method's rows and columns take its short label."""
    default = PipelineConfig()
    keys = dict.fromkeys(key for method in METHODS.values() for key in method.label_settings)

    def value(config: PipelineConfig, key: str) -> Any:
        return functools.reduce(getattr, key.split("."), config)

    configs = list(configs)
    return tuple(k for k in keys if any(value(config, k) != value(default, k) for config in configs))


def packaged_names(folder: str) -> list[str]:
    """The names of the YAML files shipped in ``motionfit/<folder>/`` (presets, sweeps)."""
    files = resources.files("motionfit") / folder
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def preset_names() -> list[str]:
    return packaged_names("presets")


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def nested_overrides(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides keyed by dotted field paths (``{"teacher.epochs": 5}``, what ``--set teacher.epochs=5`` and
    a deployment's ``overrides`` parameter give) as the nested dicts :func:`load_config` merges; a value that
    is itself a mapping merges into that section."""
    nested: dict[str, Any] = {}
    for key, value in settings.items():
        *parents, leaf = str(key).split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r} sets a field inside {part!r}, which is set to a value")
        both = isinstance(node.get(leaf), dict) and isinstance(value, Mapping)
        node[leaf] = deep_merge(node[leaf], dict(value)) if both else value
    return nested


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
        values = deep_merge(values, _read_yaml(Path(overlay), f"config overlay {overlay}"))
    values = deep_merge(values, overrides or {})
    return PipelineConfig.model_validate(values)
