"""Every model test runs on one intra-op torch thread (the shared ``single_torch_thread`` fixture)."""

import pytest


@pytest.fixture(autouse=True)
def single_thread(single_torch_thread: None) -> None:
    """Requests the shared fixture for every test of this folder."""
