"""Object-store credentials from a Prefect Secret block, so that no config file or deployment holds them."""

from __future__ import annotations

import os

from prefect.blocks.system import Secret


def export_storage_secret(name: str | None) -> list[str]:
    """Set in this process's environment the variables that the Prefect Secret block ``name`` holds (a JSON
    object of names to strings, e.g. ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``),
    which fsspec's object stores read, and which this process's threads, task processes and local Dask
    workers inherit. Returns the variables' names (never their values); nothing happens for ``None``."""
    if name is None:
        return []
    value = Secret.load(name).get()
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(
            f"Prefect Secret block {name!r} (runtime.storage_secret) must hold a JSON object of environment "
            'variables, names to strings: {"AWS_ACCESS_KEY_ID": "...", "AWS_SECRET_ACCESS_KEY": "..."}'
        )
    os.environ.update(value)
    return sorted(value)
