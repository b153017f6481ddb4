"""A run root on S3: a real S3 API (moto's server on 127.0.0.1) holds the zarr stores, tables, markers, lock
and Prefect results; the arrays equal a local run's, and a second process resumes the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import LocalS3
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL

from motionfit.config import PipelineConfig
from motionfit.flows.preprocess import decode_flow, ingest_flow, tvl1_flow
from motionfit.status import planned_epochs
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.lock import RunRootInUseError, RunRootLock, holding
from motionfit.storage.tables import read_table
from motionfit.tasks.data.ingest import synthetic_data_config
from motionfit.tasks.motion import tvl1

pytestmark = pytest.mark.slow

BUCKET = "motionfit-runs"


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with LocalS3(BUCKET) as server:
        yield server


def _config(data_root: Path, run_root: str) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "run_root": run_root,
            "methods": ["scratch", "teacher"],  # clips of 8 frames: the data set's videos have 10
            "teacher": {"clip_length": 8},
            "finetune": {"clip_length": 8},
            "data": synthetic_data_config(data_root).model_dump(),
            "decode": {"short_side": 32},
            "runtime": {"videos_per_batch": 4, "max_workers": 2, "retry_delay_seconds": 0},
        }
    )


def _commit_times(layout: RunLayout, stage: str) -> dict[str, float]:
    markers = layout.markers(stage)
    return {video_id: markers.committed_info(video_id)["time"] for video_id in markers.committed_ids()}


def test_a_run_on_s3_equals_a_local_run_and_a_second_process_resumes_it(
    prefect_server, s3: LocalS3, micro_synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_root = tmp_path / "data"
    shutil.copytree(micro_synth_root, data_root)
    local = _config(data_root, str(tmp_path / "local"))
    for stage in (ingest_flow, decode_flow, tvl1_flow):
        stage(local)

    remote = _config(data_root, f"s3://{BUCKET}/runs/micro")
    ingest_flow(remote)
    decode_flow(remote)
    original = tvl1.compute_tvl1_flow
    calls: list[int] = []

    def crash_after_three(frames, config):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("simulated worker crash")
        return original(frames, config)

    with monkeypatch.context() as patch:
        patch.setattr(tvl1, "compute_tvl1_flow", crash_after_three)
        first = tvl1_flow(remote)
    layout = RunLayout.at(remote.run_root)
    assert first["done"] == 3 and first["failed"] > 0
    with holding(layout.lock):  # the lock is an object in the bucket: a second holder is refused
        with pytest.raises(RunRootInUseError, match=f"PID {os.getpid()}"):
            RunRootLock(layout.lock).acquire()
    decoded, flowed = _commit_times(layout, "decode"), _commit_times(layout, "flow")

    # A second worker: another process on the same server, with the store's credentials from a Prefect
    # Secret block rather than its environment (nor the config file, which names only the block).
    Secret(value=s3.environment).save("motionfit-test-s3", overwrite=True)
    resumed = remote.model_copy(
        update={"runtime": remote.runtime.model_copy(update={"storage_secret": "motionfit-test-s3"})}
    )
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(resumed.model_dump(mode="json")))
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    result = subprocess.run(
        [sys.executable, "-m", "motionfit.cli", "run", str(config_file), "--until", "flow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    secret = s3.environment["AWS_SECRET_ACCESS_KEY"]
    stored_config = s3.client.get_object(Bucket=BUCKET, Key="runs/micro/config.yaml")["Body"].read().decode()
    assert "motionfit-test-s3" in stored_config and secret not in stored_config + config_file.read_text()
    assert planned_epochs(layout)["teacher"] == remote.teacher.epochs, "status reads the config in the bucket"

    assert _commit_times(layout, "decode") == decoded, "no decoded video was decoded again"
    after = _commit_times(layout, "flow")
    assert {v: after[v] for v in flowed} == flowed, "no committed flow was recomputed"
    reference = RunLayout.at(local.run_root)
    for stage in ("frames", "flow"):
        ours, theirs = layout.store(stage), reference.store(stage)
        assert ours.committed_ids() == theirs.committed_ids()
        for video_id in theirs.committed_ids():
            np.testing.assert_array_equal(ours.read(video_id), theirs.read(video_id))
    manifest = read_table(layout.manifest)
    assert (manifest["status_flow"] == "done").all()
    assert set(read_table(layout.markers("flow").index_url)["video_id"]) == set(after)
    assert not fs.exists(layout.lock), "the second run released the lock"
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix="runs/micro/_prefect/")["Contents"]
    records = [item["Key"] for item in listed if not item["Key"].endswith(".json")]
    assert records, "the batches' Prefect results are stored in the bucket"
    for key in records:
        record = json.loads(s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert record["metadata"]["serializer"]["type"] == "motionfit-json"
