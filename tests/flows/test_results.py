"""Stage task results in the run root are plain JSON; a record written by another serializer (a pickle put
there by anyone who can write to the bucket) is never decoded: its task runs again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prefect import flow, task
from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
from prefect.serializers import PickleSerializer

from motionfit.flows.execution import stage_task_options
from motionfit.flows.results import PlainJSONSerializer, plain
from motionfit.runtime import RuntimeConfig
from motionfit.storage.layout import RunLayout
from motionfit.tasks.per_video import VideoOutcome

CALLS: list[int] = []


class Planted:
    """Unpickling it touches a file: the proof that a record was decoded with pickle."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self):
        return (Path.touch, (self.proof,))


@task
def count(run_root: str, value: int, inputs: str) -> dict[str, float]:
    CALLS.append(value)
    return {"value": np.float32(value) * 2, "outcome": VideoOutcome("v1", "done")}


@task
def broken(run_root: str) -> None:
    raise ValueError("video v7 has no frames")


@flow
def failing_stage(run_root: str) -> None:
    broken.with_options(**stage_task_options(RunLayout.at(run_root), RuntimeConfig()))(run_root)


@flow
def stage(run_root: str) -> dict:
    run = count.with_options(**stage_task_options(RunLayout.at(run_root), RuntimeConfig()))
    return run(run_root, 21, "inputs-key")


def test_plain_values_only() -> None:
    assert plain({"a": (1, np.int64(2)), "b": VideoOutcome("v", "failed", "bad")}) == {
        "a": [1, 2],
        "b": {
            "video_id": "v",
            "status": "failed",
            "error": "bad",
            "seconds": 0.0,
            "record": None,
            "reason": None,
        },
    }
    with pytest.raises(TypeError, match="a set, which plain JSON cannot hold"):
        PlainJSONSerializer().dumps({"ids": {"a"}})


def test_a_planted_pickle_record_is_not_decoded_and_the_task_runs_again(
    prefect_server, tmp_path: Path
) -> None:
    CALLS.clear()
    root = str(tmp_path / "run")
    assert stage(root) == {"value": 42.0, "outcome": VideoOutcome("v1", "done")}
    cached = stage(root)
    outcome = {
        "video_id": "v1",
        "status": "done",
        "error": None,
        "seconds": 0.0,
        "record": None,
        "reason": None,
    }
    assert CALLS == [21] and cached == {"value": 42.0, "outcome": outcome}, "read back from the JSON record"
    (record,) = [p for p in Path(RunLayout.at(root).prefect_results).iterdir() if p.is_file()]
    assert b'"type":"motionfit-json"' in record.read_bytes() and b"pickle" not in record.read_bytes()

    proof = tmp_path / "pickle-was-decoded"
    metadata = ResultRecordMetadata(storage_key=str(record), serializer=PickleSerializer())
    record.write_bytes(ResultRecord(metadata=metadata, result=Planted(proof)).serialize())
    assert stage(root)["value"] == 42.0
    assert not proof.exists(), "the planted pickle was never decoded"
    assert CALLS == [21, 21], "the record counted as missing, so the task ran again"
    assert b'"type":"motionfit-json"' in record.read_bytes(), "and replaced the planted record"


def test_a_failed_tasks_error_is_kept_as_plain_text(
    prefect_server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = str(tmp_path / "run")
    with pytest.raises(ValueError, match="video v7 has no frames"):
        failing_stage(root)
    assert "Failed to write result" not in caplog.text
    (record,) = [p for p in Path(RunLayout.at(root).prefect_results).iterdir() if p.is_file()]
    stored = ResultRecord.deserialize(record.read_bytes(), backup_serializer=PlainJSONSerializer())
    assert stored.result == "ValueError: video v7 has no frames"
