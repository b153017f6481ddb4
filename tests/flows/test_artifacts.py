import base64
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from motionfit.flows import artifacts
from motionfit.tasks.evaluation.plots import plot_confusion_matrix


def read_versions(key: str) -> list:
    """All versions of the artifact ``key``, newest first."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )


@pytest.fixture(scope="module")
def png_file(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("run")
    return plot_confusion_matrix(np.eye(2), ["a", "b"], str(root / "plots" / "confusion.png"))


def test_artifact_key_normalises_free_text():
    assert artifacts.artifact_key("Teacher", "Epochs (fold 1)") == "teacher-epochs-fold-1"
    with pytest.raises(ValueError, match="hold no letter or digit"):
        artifacts.artifact_key("", "!!")


def test_run_keys_are_scoped_to_the_run_root():
    key = artifacts.run_key("/runs/deployed-demo", "teacher", "epochs")
    assert key.startswith("deployed-demo-") and key.endswith("-teacher-epochs")
    assert artifacts.KEY_PATTERN.fullmatch(key)
    other = artifacts.run_key("/other/deployed-demo", "report")
    assert other != artifacts.run_key("/runs/deployed-demo", "report")
    long_name = artifacts.run_scope("s3://bucket/" + "x" * 80)
    assert len(long_name) == artifacts.SCOPE_NAME_CHARS + 7 and artifacts.KEY_PATTERN.fullmatch(long_name)


def test_table_records_are_plain_json_values():
    table = pd.DataFrame(
        {
            "n": np.array([1, 2]),
            "x": [1.0 / 3.0, np.nan],
            "when": pd.to_datetime(["2024-01-01", None]),
            "name": ["a", None],
        }
    )
    assert artifacts.table_records(table) == [
        {"n": 1, "x": 1.0 / 3.0, "when": "2024-01-01 00:00:00", "name": "a"},
        {"n": 2, "x": None, "when": None, "name": None},
    ]


def test_png_data_url_round_trips_and_rejects_other_bytes(png_file):
    with open(png_file, "rb") as handle:
        data = handle.read()
    url = artifacts.png_data_url(png_file)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.removeprefix("data:image/png;base64,")) == data
    assert artifacts.png_data_url(data) == url
    with pytest.raises(ValueError, match="not a PNG image"):
        artifacts.png_data_url(b"GIF89a")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        artifacts.png_data_url(png_file + ".missing")


def test_embed_images_inlines_relative_pngs_only(png_file):
    root = png_file.rsplit("/plots/", 1)[0]
    markdown = "# r\n![confusion](plots/confusion.png)\n![remote](https://example.org/x.png)\n"
    embedded = artifacts.embed_images(markdown, root)
    assert f"![confusion]({artifacts.png_data_url(png_file)})" in embedded
    assert "![remote](https://example.org/x.png)" in embedded


def test_outside_a_run_nothing_is_published(prefect_server, png_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Prefect warns when artifacts are created outside a run
        assert artifacts.publish_table("outside-table", pd.DataFrame({"a": [1]})) is None
        assert artifacts.publish_markdown("outside-markdown", "# nothing") is None
        assert artifacts.publish_image("outside-image", png_file) is None
        progress = artifacts.publish_progress("outside-progress", total=3)
        progress.advance(2)
        growing = artifacts.LiveTable("outside-growing")
        assert growing.append({"epoch": 1, "loss": 0.5}) is None
    assert progress.artifact_id is None and progress.percent == pytest.approx(200 / 3)
    assert growing.frame.to_dict("records") == [{"epoch": 1, "loss": 0.5}]
    for key in ("outside-table", "outside-markdown", "outside-image", "outside-progress", "outside-growing"):
        assert read_versions(key) == []
    with pytest.raises(ValueError, match="lowercase letters, digits and single dashes"):
        artifacts.publish_table("Bad_Key", pd.DataFrame())


@task
def train_epochs(n_epochs: int) -> None:
    table = artifacts.LiveTable("test-teacher-epochs", description="teacher training")
    for epoch in range(1, n_epochs + 1):
        table.append({"epoch": epoch, "loss": 1.0 / epoch, "accuracy": np.float32(10.0 * epoch)})


@flow
def publishing_flow(png_path: str, run_root: str) -> None:
    table = pd.DataFrame(
        {"method": ["scratch", "motionfit"], "top1": [58.9, np.nan], "seed": np.array([0, 1])}
    )
    artifacts.publish_table("test-metrics", table, description="metrics")
    artifacts.publish_markdown(
        "test-report", "# Report\n\n![confusion](plots/confusion.png)\n", "report", image_base_url=run_root
    )
    artifacts.publish_image("test-image", png_path, description="confusion matrix")
    progress = artifacts.publish_progress("test-progress", total=4, description="videos decoded")
    progress.advance(2)
    train_epochs(3)


def test_artifacts_published_in_a_flow_run(prefect_server, png_file):
    publishing_flow(png_file, png_file.rsplit("/plots/", 1)[0])
    data_url = artifacts.png_data_url(png_file)

    (metrics,) = read_versions("test-metrics")
    assert metrics.type == "table" and metrics.description == "metrics" and metrics.flow_run_id is not None
    assert json.loads(metrics.data) == [
        {"method": "scratch", "top1": 58.9, "seed": 0},
        {"method": "motionfit", "top1": None, "seed": 1},
    ]

    (report,) = read_versions("test-report")
    assert report.type == "markdown"
    assert report.data == f"# Report\n\n![confusion]({data_url})\n"

    (image,) = read_versions("test-image")
    assert image.type == "image" and image.data == data_url

    (progress,) = read_versions("test-progress")
    assert progress.type == "progress" and progress.data == pytest.approx(50.0)

    (epochs,) = read_versions("test-teacher-epochs")  # one artifact, updated in place after every epoch
    assert epochs.task_run_id is not None and epochs.description == "teacher training"
    assert json.loads(epochs.data) == [
        {"epoch": 1, "loss": 1.0, "accuracy": 10.0},
        {"epoch": 2, "loss": 0.5, "accuracy": 20.0},
        {"epoch": 3, "loss": 1.0 / 3.0, "accuracy": 30.0},
    ]
