"""The methods a run trains and compares: one table that the config, the flows, the evaluation and the report
all read.

A method is a row of every result table. It may train an RGB *student* in the ``student_train`` stage (with
the objective and the config section named here, on the data named by ``trains_on``), be *fine-tuned* on the
labelled target in the ``finetune`` stage (from the student, or from a random initialisation), and needs the
IDT stages when its student learns from the IDT clusters. Stage names derive from the method's name
(``student_<name>``, ``finetune_<name>``); the flow teacher is its own stage, ``teacher``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

TEACHER_STAGE = "teacher"
"""Checkpoint folder of the flow teacher (``checkpoints/teacher``)."""

Modality = Literal["rgb", "flow"]
TrainsOn = Literal["pseudo_labels", "clusters", "supervised_labels", "target", "teacher_features", "videos"]


@dataclass(frozen=True)
class Method:
    """One method: ``name`` (in configs, metrics and stage names), ``label`` (in reports), the ``objective``
    and config ``section`` of its student (None: no student), what that student ``trains_on`` (the teacher's
    pseudo-labels, the IDT clusters, the source's held-back labels, the labelled target with unlabelled
    videos, the flow teacher's features on the labelled target, or the unlabelled videos alone), its
    ``init`` for fine-tuning (None: not fine-tuned), whether it ``needs_idt``, the ``modality`` it sees at
    test time, ``section_defaults``: the values its config section takes where a config leaves them out
    (the objective at least), and ``label_settings``: the config keys whose default values the label names,
    with ``short_label``, the label of a table whose runs set one of them otherwise."""

    name: str
    label: str
    objective: str | None = None
    section: str | None = None
    trains_on: TrainsOn | None = None
    init: Literal["random", "student"] | None = None
    needs_idt: bool = False
    modality: Modality = "rgb"
    section_defaults: dict[str, Any] = field(default_factory=dict)
    label_settings: tuple[str, ...] = ()
    short_label: str = ""

    def __post_init__(self) -> None:
        if self.objective is not None:
            defaults = {"objective": self.objective, **self.section_defaults}
            object.__setattr__(self, "section_defaults", defaults)

    @property
    def student_stage(self) -> str | None:
        """Checkpoint folder of the method's student, or None."""
        return None if self.objective is None else f"student_{self.name}"

    @property
    def finetuned(self) -> bool:
        return self.init is not None

    @property
    def finetune_stage(self) -> str | None:
        """Checkpoint folder of the method's fine-tuned network, or None."""
        return f"finetune_{self.name}" if self.finetuned else None

    @property
    def representation_stage(self) -> str | None:
        """The checkpoint whose frozen features represent the method before fine-tuning (retrieval, few-shot
        probes): the teacher, the student, or None for a randomly initialised network."""
        return TEACHER_STAGE if self.name == "teacher" else self.student_stage

    @property
    def evaluated_stage(self) -> str:
        """The checkpoint scored on the target test split: the fine-tuned network, else the student (CMPL's
        primary network), else the teacher."""
        return self.finetune_stage or self.student_stage or TEACHER_STAGE


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("scratch", "RGB from scratch", init="random"),
        Method(
            "teacher",
            "Flow teacher (TV-L1)",
            modality="flow",
            label_settings=("teacher.modality",),
            short_label="Teacher",
        ),
        Method(
            "idt_la",
            "IDT-prior Local Aggregation",
            objective="local_aggregation",
            section="idt_la",
            trains_on="clusters",
            init="student",
            needs_idt=True,
        ),
        Method(
            "video_ir",
            "Video instance recognition",
            objective="instance_recognition",
            section="video_ir",
            trains_on="videos",
            init="student",
        ),
        Method(
            "video_la",
            "Video Local Aggregation (own k-means)",
            objective="video_local_aggregation",
            section="video_la",
            trains_on="videos",
            init="student",
        ),
        Method("cmpl", "CMPL", objective="cmpl", section="cmpl", trains_on="target"),
        Method(
            "motionfit",
            "MotionFit student",
            objective="pseudo_labels",
            section="motionfit",
            trains_on="pseudo_labels",
            init="student",
        ),
        Method(
            "mscl",
            "MSCL student (motion sampling + LMCL)",
            objective="pseudo_labels",
            section="mscl",
            trains_on="pseudo_labels",
            init="student",
            section_defaults={"motion_sampling": True, "lmcl_weight": 1.0},
            label_settings=("mscl.motion_sampling", "mscl.lmcl_weight"),
            short_label="MSCL student",
        ),
        Method(
            "mers",
            "MERS student (flow-feature regression)",
            objective="mers",
            section="mers",
            trains_on="teacher_features",
            init="student",
        ),
        Method(
            "mars",
            "MARS (flow-feature regression + cross-entropy)",
            objective="mars",
            section="mars",
            trains_on="teacher_features",
        ),
        Method(
            "supervised",
            "Supervised pre-training (source labels)",
            objective="pseudo_labels",
            section="motionfit",
            trains_on="supervised_labels",
            init="student",
        ),
    )
}
"""Every method, in the order of the result tables. ``mers`` and ``mars`` are the knowledge-transfer baselines
of MARS (Crasto et al. 2019) on the teacher's own training videos: MERS's features regress the teacher's and
are fine-tuned like a student; MARS trains its classifier with the regression and is scored as it stands, as
in the paper. ``supervised`` is the upper bound of the IDT-prior paper's "% sup.": MotionFit's student recipe
on the source's true labels (hard targets)."""

DEFAULT_METHODS = ("scratch", "teacher", "motionfit", "idt_la", "supervised")
"""Methods of a run whose config names none."""


def training_stages() -> list[str]:
    """Every training stage's checkpoint folder: the teacher, then the students, then the fine-tuned
    networks."""
    students = [m.student_stage for m in METHODS.values() if m.student_stage]
    finetuned = [m.finetune_stage for m in METHODS.values() if m.finetune_stage]
    return [TEACHER_STAGE, *students, *finetuned]


def label(name: str, changed: Collection[str] = ()) -> str:
    """The report label of the method ``name`` (``name`` itself for rows that are no method, such as the IDT
    clusters); its short label where a table's runs set one of the settings its label names away from its
    default (``changed``: those config keys)."""
    if name not in METHODS:
        return name
    method = METHODS[name]
    return method.short_label if set(method.label_settings) & set(changed) else method.label


def ordered(names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` in the order of the result tables (unknown names last, sorted)."""
    known = [name for name in METHODS if name in set(names)]
    return known + sorted(set(names) - set(METHODS))
