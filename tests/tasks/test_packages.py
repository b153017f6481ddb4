"""Each stage family's ``__init__`` names its public API, and every name resolves to its module."""

from __future__ import annotations

import importlib

import pytest

FAMILIES = ["data", "motion", "idt", "prior", "training", "training.students", "evaluation"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_public_name_of_a_family_resolves(family: str) -> None:
    package = importlib.import_module(f"motionfit.tasks.{family}")
    assert package.__all__, f"motionfit.tasks.{family} names no public API"
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute"):
        package.not_a_public_name  # noqa: B018
