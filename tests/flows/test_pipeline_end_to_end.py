"""The whole pipeline on a small synthetic data set: every stage, the report and the Prefect artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL_SYNTH
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from motionfit.config import load_config
from motionfit.flows.artifacts import run_key
from motionfit.flows.pipeline import pipeline_flow
from motionfit.status import render_status
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import load_manifest
from motionfit.storage.matrix import read_video_matrix
from motionfit.storage.tables import read_table
from motionfit.tasks.data.clips import ClipDataset
from motionfit.tasks.evaluation.metrics import read_metrics
from motionfit.tasks.evaluation.report import render_report_for_terminal
from motionfit.tasks.evaluation.stage import evaluate_run
from motionfit.tasks.methods import DEFAULT_METHODS, METHODS

pytestmark = pytest.mark.slow

NETWORK = {"epochs": 2, "batch_size": 8, "num_workers": 0}


def _versions(key: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )


def _latest(key: str):
    found = _versions(key)
    assert found, f"no artifact with key {key!r}"
    return found[0]


TRAINED_ON: list[tuple[str, frozenset[str]]] = []
"""(modalities, video ids) of every training clip data set the run built."""


def _recording_training_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ClipDataset.__init__

    def record(self, layout, keys, modalities, clip_length, transform, **options) -> None:
        original(self, layout, keys, modalities, clip_length, transform, **options)
        if transform.train:
            TRAINED_ON.append(("/".join(modalities), frozenset(self.video_ids)))

    monkeypatch.setattr(ClipDataset, "__init__", record)


@pytest.fixture(scope="module")
def finished_run(prefect_server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("e2e")
    config = load_config(
        preset="tiny",
        overrides={
            "methods": [*DEFAULT_METHODS, "mers", "mars"],
            "run_root": str(root / "run"),
            "synth_root": str(root / "data"),
            "synth": SMALL_SYNTH,
            "decode": {"short_side": 48},
            "cluster": {"n_clusters": 4},
            "fisher": {"gmm": {"n_components": 4}},
            "teacher": NETWORK,
            "motionfit": NETWORK,
            "idt_la": {**NETWORK, "ir_warmup_epochs": 1, "joint_space_epochs": 1},
            "mers": NETWORK,
            "mars": NETWORK,
            "finetune": NETWORK,
            "evaluate": {"fewshot_shots": [1, "all"], "gradcam_videos": 2, "retrieval_clips": 2},
        },
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        _recording_training_sets(monkeypatch)
        pipeline_flow(config)
    return Path(config.run_root), config


def test_every_stage_finished_for_every_video(finished_run) -> None:
    run_root, _ = finished_run
    manifest = load_manifest(RunLayout.at(run_root))
    assert len(manifest) == 24
    for stage in ("decode", "flow"):
        assert (manifest[f"status_{stage}"] == "done").all(), stage
    source = manifest["dataset"] == "source"
    assert (manifest.loc[source, "status_idt"] == "done").all()
    assert manifest.loc[~source, "status_idt"].isna().all(), "target videos never reach the IDT prior"
    layout = RunLayout.at(run_root)
    for stage in ("teacher", "student_motionfit", "student_idt_la", "student_supervised", "finetune_scratch"):
        assert fs.exists(layout.checkpoint(stage)), stage
    status = render_status(str(run_root))
    assert "decode" in status
    teacher_epochs = load_config(layout.run_config).teacher.epochs
    assert "train:teacher" in status and f"epoch {teacher_epochs}/{teacher_epochs}" in status


def test_no_target_test_video_reaches_the_prior_the_teacher_pseudo_labels_or_training(finished_run) -> None:
    run_root, _ = finished_run
    layout = RunLayout.at(run_root)
    manifest = load_manifest(layout)
    test_ids = set(manifest.loc[manifest["split"] == "test", "video_id"])
    target_ids = set(manifest.loc[manifest["dataset"] == "target", "video_id"])
    assert len(test_ids) == 6
    assert not target_ids & layout.markers("idt").committed_ids()
    fv_ids, _ = read_video_matrix(layout.fv_vectors)
    assert fv_ids and not target_ids & set(fv_ids)
    assert not target_ids & set(read_table(layout.clusters)["video_id"])
    assert not test_ids & set(read_table(layout.pseudo_labels)["video_id"])
    assert {"flow", "rgb"} <= {modality for modality, _ in TRAINED_ON}  # the teacher and the RGB networks
    for modality, video_ids in TRAINED_ON:
        assert not test_ids & video_ids, f"a {modality} training set holds target test videos"


def test_metrics_cover_every_method(finished_run) -> None:
    run_root, config = finished_run
    metrics = read_metrics(RunLayout.at(run_root))
    for method in config.methods:
        rows = metrics[metrics["method"] == method].set_index("metric")["value"]
        for metric in ("top1", "r@1", "r@5", "fewshot_1", "fewshot_all"):
            assert 0.0 <= rows[metric] <= 100.0, (method, metric)
    pct = metrics[metrics["metric"] == "pct_sup_top1"].set_index("method")["value"]
    top1 = metrics[metrics["metric"] == "top1"].set_index("method")["value"]
    np.testing.assert_allclose(pct["motionfit"], 100 * top1["motionfit"] / top1["supervised"])
    assert set(metrics["metric"]) >= {
        "cluster_nmi",
        "cluster_ami",
        "cluster_purity",
        "pseudo_label_acc",
        "gmacs",
        "params_m",
    }


def test_mers_and_mars_regress_the_teacher_on_the_target_train_clips_and_are_scored(finished_run) -> None:
    run_root, _ = finished_run
    layout = RunLayout.at(run_root)
    manifest = load_manifest(layout)
    train_ids = set(
        manifest.loc[(manifest["dataset"] == "target") & (manifest["split"] == "train"), "video_id"]
    )
    assert ("rgb/flow", frozenset(train_ids)) in TRAINED_ON  # paired clips of the teacher's videos
    for stage in ("student_mers", "finetune_mers", "student_mars"):
        assert fs.exists(layout.checkpoint(stage)), stage
        if stage.startswith("student_"):
            assert np.isfinite(read_table(layout.history(stage))["feature_mse"]).all(), stage
    assert not fs.exists(layout.checkpoint("finetune_mars")), "MARS is scored as it trained"
    report = Path(layout.report).read_text()
    for method in ("mers", "mars"):
        assert f"| {METHODS[method].label} |" in report, method


def test_report_shows_the_metrics_and_plots(finished_run) -> None:
    run_root, _ = finished_run
    layout = RunLayout.at(run_root)
    report = Path(layout.report).read_text()
    metrics = read_metrics(layout)
    motionfit_top1 = metrics.query("method == 'motionfit' and metric == 'top1'")["value"].iloc[0]
    row = next(line for line in report.splitlines() if line.startswith("| MotionFit student"))
    assert f"{motionfit_top1:.1f}" in row
    plots = (
        "training_curves.png",
        "confusion_motionfit.png",
        "retrieval_examples.png",
        "gradcam_motionfit.png",
    )
    for plot in plots:
        png = Path(layout.plots) / plot
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        assert f"plots/{plot}" in report
    terminal = render_report_for_terminal(str(run_root))
    assert "MotionFit student" in terminal and f"{motionfit_top1:.1f}" in terminal
    n_test = int((load_manifest(layout)["split"] == "test").sum())
    assert f"All {n_test} listed test videos were scored." in report and terminal.startswith("All ")


def test_prefect_artifacts_hold_the_results(finished_run) -> None:
    run_root, config = finished_run
    root = str(run_root)
    report = _latest(run_key(root, "report"))
    assert "MotionFit student" in report.data and "data:image/png;base64," in report.data
    metrics = _latest(run_key(root, "metrics"))
    assert "pct_sup_top1" in str(metrics.data)
    assert "decode" in str(_latest(run_key(root, "manifest-summary")).data)
    for stage in ("decode", "flow", "idt"):
        assert float(_latest(run_key(root, stage, "progress")).data) == pytest.approx(100.0)
    assert "nmi" in str(_latest(run_key(root, "cluster-quality")).data)
    (teacher_epochs,) = _versions(run_key(root, "teacher", "epochs"))
    epochs = json.loads(teacher_epochs.data)
    assert [row["epoch"] for row in epochs] == list(range(config.teacher.epochs))
    assert _latest(run_key(root, "plot", "confusion-motionfit")).data.startswith("data:image/png;base64,")
    summary = _latest(run_key(root, "summary"))
    assert summary.flow_run_id is not None and f"motionfit run {config.name}: Completed" in summary.data
    assert "## Videos per stage" in summary.data and "## Failed" not in summary.data
    assert "| motionfit |" in summary.data and run_key(root, "report") in summary.data


def test_a_second_run_reuses_every_result(finished_run) -> None:
    run_root, config = finished_run
    layout = RunLayout.at(run_root)
    watched = [
        layout.checkpoint("teacher"),
        layout.checkpoint("finetune_motionfit"),
        layout.checkpoint("student_mars"),
        layout.pseudo_labels,
    ]
    before = [Path(url).stat().st_mtime_ns for url in watched]
    pipeline_flow(config, until="finetune")
    assert [Path(url).stat().st_mtime_ns for url in watched] == before


def test_identical_recomputed_outputs_invalidate_nothing_downstream(finished_run) -> None:
    run_root, config = finished_run
    layout = RunLayout.at(run_root)
    video_id = sorted(layout.markers("decode").committed_ids())[0]
    before = layout.markers("decode").committed_info(video_id)
    layout.markers("decode").uncommit(video_id)  # its frames are decoded again, to the same pixels
    labels = Path(layout.pseudo_labels)
    labels.write_bytes(labels.read_bytes())  # the same table, written anew
    watched = [layout.checkpoint(stage) for stage in ("teacher", "student_motionfit", "finetune_motionfit")]
    flow_commit = layout.markers("flow").committed_info(video_id)
    trained = [Path(url).stat().st_mtime_ns for url in watched]
    pipeline_flow(config, until="finetune")
    after = layout.markers("decode").committed_info(video_id)
    assert after["time"] > before["time"] and after["checksum"] == before["checksum"], "decoded again"
    assert layout.markers("flow").committed_info(video_id) == flow_commit, "its flow was not recomputed"
    assert [Path(url).stat().st_mtime_ns for url in watched] == trained, "nothing was trained again"


def test_evaluation_without_motionfit_costs_the_first_methods_fine_tuned_network(finished_run) -> None:
    run_root, config = finished_run
    layout = RunLayout.at(run_root)
    methods = ["scratch", "idt_la"]  # scratch's frozen representation has no classifier to count
    result = evaluate_run(layout, load_manifest(layout), methods, config, "cpu", 0)
    costs = result.metrics[result.metrics["metric"] == "gmacs"].set_index("method")["value"]
    assert list(costs.index) == ["scratch"] and costs["scratch"] > 0
    assert set(result.metrics["method"].dropna()) >= set(methods)


def test_evaluation_skips_the_probes_when_the_labelled_train_videos_hold_one_class(
    finished_run, caplog: pytest.LogCaptureFixture
) -> None:
    run_root, config = finished_run
    layout = RunLayout.at(run_root)
    manifest = load_manifest(layout)
    others = (
        (manifest["dataset"] == "target") & (manifest["split"] == "train") & (manifest["label_index"] > 0)
    )
    manifest.loc[others, "label"] = None  # as data.labelled_sampling uniform may leave them
    manifest.loc[others, "label_index"] = -1
    result = evaluate_run(layout, manifest, ["scratch"], config, "cpu", 0)
    metrics = set(result.metrics["metric"])
    assert {"top1", "r@1"} <= metrics and not any(metric.startswith("fewshot") for metric in metrics)
    assert "few-shot probes skipped" in caplog.text
