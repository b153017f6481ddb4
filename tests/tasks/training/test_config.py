"""The training config's paper defaults agree with the losses' own defaults."""

from __future__ import annotations

import inspect

from motionfit.models import cmpl, motion_contrastive
from motionfit.models import local_aggregation as la
from motionfit.tasks.training.config import StudentConfig


def _default(function: object, parameter: str) -> object:
    return inspect.signature(function).parameters[parameter].default


def test_student_defaults_are_the_models_defaults() -> None:
    config = StudentConfig()
    assert config.la_temperature == _default(la.local_aggregation_loss, "temperature")
    assert config.la_background_neighbours == _default(la.local_aggregation_loss, "k_background")
    assert config.ir_negatives == _default(la.instance_recognition_loss, "n_negatives")
    assert config.bank_momentum == _default(la.MemoryBank, "momentum")
    assert config.cmpl_threshold == _default(cmpl.cmpl_pseudo_labels, "threshold")
    assert config.lmcl_temperature == _default(
        motion_contrastive.local_motion_contrastive_loss, "temperature"
    )


def test_the_config_names_exactly_the_student_objectives() -> None:
    from typing import get_args

    from motionfit.tasks.training.students.trainer import OBJECTIVES

    assert set(get_args(StudentConfig.model_fields["objective"].annotation)) == set(OBJECTIVES)
