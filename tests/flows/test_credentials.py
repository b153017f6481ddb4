"""Object-store credentials from a Prefect Secret block: exported to the run's environment, names logged."""

from __future__ import annotations

import os

import pytest
from prefect.blocks.system import Secret

from motionfit.flows.credentials import export_storage_secret


def test_a_secret_blocks_variables_are_exported_and_a_malformed_one_is_refused(
    prefect_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOTIONFIT_TEST_STORE_KEY", raising=False)
    Secret(value={"MOTIONFIT_TEST_STORE_KEY": "k-123"}).save("motionfit-test-store", overwrite=True)
    assert export_storage_secret(None) == []
    assert export_storage_secret("motionfit-test-store") == ["MOTIONFIT_TEST_STORE_KEY"]
    assert os.environ["MOTIONFIT_TEST_STORE_KEY"] == "k-123"
    monkeypatch.delenv("MOTIONFIT_TEST_STORE_KEY")

    Secret(value="just-a-password").save("motionfit-test-bad", overwrite=True)
    with pytest.raises(ValueError, match=r"'motionfit-test-bad' .* must hold a JSON object"):
        export_storage_secret("motionfit-test-bad")
