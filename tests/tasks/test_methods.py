"""The method registry: one table the config, flows, evaluation and report agree on."""

from __future__ import annotations

import pytest

from motionfit.config import PipelineConfig, changed_label_settings, load_config
from motionfit.flows.pipeline import selected_stages
from motionfit.tasks.evaluation.report import report_tables
from motionfit.tasks.methods import METHODS, ordered, training_stages


def test_every_student_section_is_a_config_section_with_its_methods_objective() -> None:
    config = PipelineConfig()
    for method in METHODS.values():
        if method.section is not None:
            assert getattr(config, method.section).objective == method.objective, method.name
    assert config.cmpl.objective == "cmpl" and config.idt_la.objective == "local_aggregation"


def test_the_settings_a_label_names_are_config_keys_and_come_with_a_short_label() -> None:
    config = PipelineConfig().model_dump()
    for method in METHODS.values():
        for key in method.label_settings:
            section, name = key.split(".")
            assert name in config[section], key
        assert bool(method.label_settings) == bool(method.short_label), method.name


def test_stage_names_derive_from_the_method() -> None:
    assert METHODS["idt_la"].student_stage == "student_idt_la"
    assert METHODS["idt_la"].finetune_stage == "finetune_idt_la"
    assert METHODS["cmpl"].evaluated_stage == "student_cmpl"  # CMPL's primary network, not fine-tuned
    assert METHODS["mers"].evaluated_stage == "finetune_mers"  # features only: fine-tuned on the target
    assert METHODS["mars"].evaluated_stage == "student_mars"  # trained with its classifier: scored as is
    assert METHODS["teacher"].evaluated_stage == "teacher" and METHODS["scratch"].student_stage is None
    assert len(training_stages()) == len(set(training_stages()))


@pytest.mark.parametrize("methods", [[], ["scratch", "teachr"], ["scratch", "scratch"]])
def test_the_config_rejects_unknown_empty_or_repeated_methods(methods: list[str]) -> None:
    with pytest.raises(ValueError, match="methods must name distinct methods"):
        load_config(preset="tiny", overrides={"methods": methods})


def test_a_student_section_with_another_objective_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"idt_la\.objective is 'cmpl'"):
        load_config(preset="tiny", overrides={"idt_la": {"objective": "cmpl"}})


def test_idt_stages_run_only_for_methods_that_need_the_prior() -> None:
    without = selected_stages(load_config(preset="tiny", overrides={"methods": ["scratch", "cmpl"]}))
    with_prior = selected_stages(load_config(preset="tiny", overrides={"methods": ["idt_la"]}))
    assert "idt" not in without and "cluster" not in without
    assert {"idt", "fv_fit", "fv_encode", "cluster"} <= set(with_prior)


def test_cmpl_is_reported_under_its_own_name_in_registry_order() -> None:
    import pandas as pd

    metrics = pd.DataFrame(
        [
            {"method": name, "metric": "top1", "value": value, "split": "test", "seed": 0}
            for name, value in (("motionfit", 70.0), ("cmpl", 50.0), ("scratch", 20.0))
        ]
    )
    accuracy = report_tables(metrics)[0][1]
    assert list(accuracy["Method"]) == ["RGB from scratch", "CMPL", "MotionFit student"]
    assert ordered(["supervised", "cmpl", "idt_clusters", "scratch"]) == [
        "scratch",
        "cmpl",
        "supervised",
        "idt_clusters",
    ]


def test_a_section_takes_its_methods_defaults_for_what_a_config_leaves_out() -> None:
    config = load_config(preset="tiny", overrides={"mscl": {"epochs": 2}})
    assert config.mscl.motion_sampling and config.mscl.lmcl_weight > 0 and config.mscl.epochs == 2
    ablation = load_config(preset="tiny", overrides={"mscl": {"lmcl_weight": 0.0}})
    assert ablation.mscl.lmcl_weight == 0.0 and ablation.mscl.motion_sampling
    assert config.video_la.objective == "video_local_aggregation"
    assert (config.mers.objective, config.mars.objective, config.mars.feature_weight) == (
        "mers",
        "mars",
        50.0,
    )


def test_a_config_that_sets_what_a_label_names_is_found_against_the_default() -> None:
    assert changed_label_settings([load_config(preset="tiny")]) == ()
    rgb = load_config(preset="tiny", overrides={"teacher": {"modality": "rgb"}})
    no_lmcl = load_config(preset="tiny", overrides={"mscl": {"lmcl_weight": 0.0}})
    assert changed_label_settings([rgb]) == ("teacher.modality",)
    assert changed_label_settings(iter([rgb, no_lmcl])) == ("teacher.modality", "mscl.lmcl_weight")
