import numpy as np
import pandas as pd
import pytest

from motionfit.storage.layout import RunLayout
from motionfit.tasks.evaluation import metrics as evaluation_metrics
from motionfit.tasks.evaluation import report


def section(markdown: str, title: str) -> str:
    """The text of the markdown section ``## title`` (up to the next ``## ``)."""
    start = markdown.index(f"## {title}")
    end = markdown.find("\n## ", start + 3)
    return markdown[start : end if end >= 0 else None]


def row_cells(text: str, first_cell: str) -> list[str]:
    """The cells of the markdown table row that starts with ``first_cell``."""
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture()
def metrics() -> pd.DataFrame:
    records = [
        {"method": "scratch", "metric": "top1", "value": 58.9},
        {"method": "motionfit", "metric": "top1", "value": 87.0, "seed": 0},
        {"method": "motionfit", "metric": "top1", "value": 88.0, "seed": 1},
        {"method": "supervised", "metric": "top1", "value": 92.0},
        {"method": "scratch", "metric": "r@1", "value": 12.5},
        {"method": "scratch", "metric": "r@5", "value": 31.25},
        {"method": "motionfit", "metric": "r@1", "value": 40.0},
        {"method": "idt_la", "metric": "cluster_nmi", "value": 0.5, "split": "source", "seed": 0},
        {"method": "idt_la", "metric": "cluster_nmi", "value": 0.7, "split": "source", "seed": 1},
        {"method": "idt_la", "metric": "cluster_ami", "value": 0.25, "split": "source", "seed": 0},
        {"method": "idt_la", "metric": "cluster_ami", "value": 0.45, "split": "source", "seed": 1},
        {"method": "motionfit", "metric": "pseudo_label_acc", "value": 95.25, "split": "source"},
        {"method": "cmpl", "metric": "pseudo_label_acc", "value": 61.5, "split": "source"},
        {"method": "cmpl", "metric": "pseudo_label_mask_rate", "value": 42.0, "split": "source"},
        {"method": "teacher", "metric": "top1", "value": 90.5, "split": "val"},
    ]
    records += evaluation_metrics.fewshot_records(
        pd.DataFrame({"shots": ["1", "all"], "mean": [33.3, 80.0], "std": [2.5, 0.0]}), "motionfit"
    )
    records += evaluation_metrics.teacher_inference_cost(
        40.77, 31.35e6, 0.1, network_seconds_per_clip=0.25
    ).records()
    records += evaluation_metrics.student_inference_cost(
        40.77, 31.35e6, network_seconds_per_clip=0.25
    ).records()
    frame = evaluation_metrics.metrics_frame(records)
    return pd.concat([frame, evaluation_metrics.percent_of_supervised_frame(frame)], ignore_index=True)


def test_write_report_puts_each_number_in_its_row(tmp_path, metrics):
    layout = RunLayout.at(tmp_path)
    evaluation_metrics.append_metrics(layout, metrics)
    pairs = evaluation_metrics.most_confused_pairs(np.array([[5, 3], [1, 6]]), ["jump", "run"])
    context = report.ReportContext(
        dataset="synthetic motion",
        confused_pairs=pairs,
        plots={"Training curves": f"{layout.plots}/curves.png"},
    )
    markdown = report.write_report(layout, context)
    assert open(layout.report, encoding="utf-8").read() == markdown

    top1 = section(markdown, "Target top-1 (test)")
    assert row_cells(top1, "RGB from scratch") == [
        "RGB from scratch",
        "RGB",
        "R(2+1)D-18",
        "16",
        "112",
        "58.9",
        "64.0",
    ]
    assert row_cells(top1, "MotionFit student")[5:] == ["87.5 ± 0.5", "95.1 ± 0.5"]  # two seeds
    assert row_cells(top1, "Supervised pre-training (source labels)")[5:] == ["92.0", report.MISSING]
    assert "Flow teacher" not in top1  # its top-1 was measured on the validation split only

    retrieval = section(markdown, "Video retrieval")
    assert row_cells(retrieval, "Method") == ["Method", "R@1", "R@5"]
    assert row_cells(retrieval, "RGB from scratch")[1:] == ["12.5", "31.2"]
    assert row_cells(retrieval, "MotionFit student")[1:] == ["40.0", report.MISSING]

    fewshot = section(markdown, "Few-shot")
    assert row_cells(fewshot, "MotionFit student")[1:] == ["33.3 ± 2.5", "80.0 ± 0.0"]

    cost = section(markdown, "Inference cost")
    assert row_cells(cost, "Flow teacher (TV-L1)")[1:] == ["flow", "31.35", "40.77", "0.250", "1.600"]
    assert row_cells(cost, "MotionFit student")[1:] == ["RGB", "31.35", "40.77", "0.250", "0.000"]

    clusters = section(markdown, "Cluster quality")
    assert row_cells(clusters, "IDT-prior Local Aggregation")[1:] == [
        "source",
        "0.600 ± 0.100",
        "0.350 ± 0.100",
        report.MISSING,
    ]
    pseudo_labels = section(markdown, "Pseudo-label")
    assert row_cells(pseudo_labels, "MotionFit student")[1:] == ["source", "95.2", report.MISSING]
    assert row_cells(pseudo_labels, "CMPL")[1:] == ["source", "61.5", "42.0"]
    assert row_cells(section(markdown, "Most confused"), "jump")[1:] == ["run", "3", "1", "4", "26.7"]
    assert "![Training curves](plots/curves.png)" in markdown


def test_report_without_metrics_says_so(tmp_path):
    markdown = report.write_report(RunLayout.at(tmp_path), report.ReportContext())
    assert "No metrics have been recorded yet." in markdown
    with pytest.raises(FileNotFoundError, match="has no metrics table"):
        report.render_report_for_terminal(str(tmp_path))


def test_markdown_table_escapes_pipes():
    table = pd.DataFrame({"Class A": ["a|b"], "n": [3]})
    assert report.markdown_table(table) == "| Class A | n |\n|---|---|\n| a\\|b | 3 |"


def test_terminal_tables_are_aligned_text(tmp_path, metrics):
    evaluation_metrics.append_metrics(RunLayout.at(tmp_path), metrics)
    text = report.render_report_for_terminal(str(tmp_path))
    blocks = text.split("\n\n")
    titles = [block.splitlines()[0] for block in blocks]
    assert titles[:3] == [
        "Target top-1 (test)",
        "Video retrieval, test queries training videos (R@k, %)",
        "Few-shot linear probe on frozen features (top-1, %)",
    ]
    retrieval = blocks[1].splitlines()
    assert retrieval[1] == "=" * len(retrieval[0])
    assert retrieval[2].split() == ["Method", "R@1", "R@5"]
    assert retrieval[4].split() == ["RGB", "from", "scratch", "12.5", "31.2"]
    table_lines = retrieval[2:]
    assert len({len(line) for line in table_lines}) == 1  # columns padded to one width, numbers right-aligned
    assert "|" not in text
    assert (
        report.format_terminal_tables(evaluation_metrics.metrics_frame([]))
        == "No metrics have been recorded yet."
    )


def test_percent_of_supervised_is_shown_only_where_the_bound_is_the_best_row(metrics) -> None:
    (_, top1), *_ = report.report_tables(metrics)
    assert "% sup." in top1.columns  # supervised 92.0 beats every other row
    weaker = metrics.copy()
    weaker.loc[(weaker["method"] == "supervised") & (weaker["metric"] == "top1"), "value"] = 50.0
    (_, top1), *_ = report.report_tables(weaker)
    assert "% sup." not in top1.columns and "Top-1 (%)" in top1.columns


def test_the_training_budget_sums_each_methods_stages() -> None:
    from motionfit.tasks.evaluation.stage import training_steps_records

    histories = {
        "teacher": pd.DataFrame({"epoch": [0, 1], "steps": [3, 3]}),
        "student_motionfit": pd.DataFrame({"epoch": [0, 1, 2], "steps": [10, 10, 10]}),
        "finetune_motionfit": pd.DataFrame({"epoch": [0], "steps": [4]}),
        "finetune_scratch": pd.DataFrame({"epoch": [0], "steps": [4]}),
    }
    records = training_steps_records(["scratch", "teacher", "motionfit", "idt_la"], histories)
    assert {r["method"]: r["value"] for r in records} == {"scratch": 4.0, "teacher": 6.0, "motionfit": 34.0}
    histories["student_motionfit"] = histories["student_motionfit"].drop(columns="steps")  # older history
    records = training_steps_records(["motionfit"], histories)
    assert records == []  # no partial count


def test_cmpl_reports_its_last_epochs_pseudo_label_accuracy_and_confident_share() -> None:
    from motionfit.tasks.evaluation.stage import cmpl_pseudo_label_records

    history = pd.DataFrame(
        {"epoch": [0, 1], "primary_pseudo_label_top1": [20.0, 61.5], "primary_mask_rate": [0.0, 42.0]}
    )
    records = cmpl_pseudo_label_records({"student_cmpl": history})
    assert {r["metric"]: r["value"] for r in records} == {
        "pseudo_label_acc": 61.5,
        "pseudo_label_mask_rate": 42.0,
    }
    assert {r["method"] for r in records} == {"cmpl"} and {r["split"] for r in records} == {"source"}
    assert (
        cmpl_pseudo_label_records({"student_cmpl": history.drop(columns="primary_pseudo_label_top1")}) == []
    )


def test_the_report_shows_the_runs_methods_and_the_rows_of_no_method() -> None:
    metrics = evaluation_metrics.metrics_frame(
        [
            {"method": "scratch", "metric": "top1", "value": 30.0},
            {"method": "motionfit", "metric": "top1", "value": 60.0},
            {"method": "cmpl", "metric": "top1", "value": 8.0},  # from an earlier run's method list
            {"method": "idt_clusters", "metric": "cluster_nmi", "value": 0.66, "split": "source"},
        ]
    )
    tables = dict(report.report_tables(metrics, report.ReportContext(methods=("scratch", "motionfit"))))
    top1 = tables["Target top-1 (test)"]
    assert list(top1["Method"]) == ["RGB from scratch", "MotionFit student"]
    assert any("0.66" in table.to_string() for table in tables.values())
    everything = dict(report.report_tables(metrics))["Target top-1 (test)"]
    assert "CMPL" in list(everything["Method"])


def test_the_report_says_how_many_listed_test_videos_were_scored() -> None:
    metrics = evaluation_metrics.metrics_frame([{"method": "scratch", "metric": "top1", "value": 30.0}])
    short = report.ReportContext(test_videos={"scratch": 21, "motionfit": 21}, listed_test_videos=23)
    line = "21 of 23 listed test videos were scored; the others are missing, failed or were excluded"
    assert line in report.render_report(metrics, short)
    assert report.format_terminal_tables(metrics, short).startswith(line)
    uneven = report.ReportContext(test_videos={"scratch": 21, "motionfit": 20}, listed_test_videos=23)
    assert "RGB from scratch 21, MotionFit student 20" in report.scored_test_videos(uneven)
    complete = report.ReportContext(test_videos={"scratch": 23}, listed_test_videos=23)
    assert "All 23 listed test videos were scored." in report.render_report(metrics, complete)
    assert report.scored_test_videos(report.ReportContext()) == ""


def test_the_report_lists_every_left_out_video_with_its_reason_up_to_a_bound(metrics) -> None:
    left_out = [
        {
            "video_id": "v_missing",
            "dataset": "target",
            "split": "test",
            "outcome": "missing",
            "reason": "no file",
        },
        {
            "video_id": "v_short",
            "dataset": "target",
            "split": "test",
            "outcome": "excluded",
            "reason": "decode: 5",
        },
    ]
    markdown = report.render_report(
        metrics, report.ReportContext(left_out=tuple(left_out), n_left_out=2), "/r"
    )
    videos = section(markdown, "Missing, failed and excluded videos (2)")
    assert row_cells(videos, "v_missing") == ["v_missing", "target", "test", "missing", "no file"]
    assert row_cells(videos, "v_short") == ["v_short", "target", "test", "excluded", "decode: 5"]
    assert "more;" not in videos

    many = [{**left_out[1], "video_id": f"v{i:03d}"} for i in range(report.LISTED_VIDEOS)]
    context = report.ReportContext(left_out=tuple(many), n_left_out=120)
    videos = section(
        report.render_report(metrics, context, "/r"), "Missing, failed and excluded videos (120)"
    )
    assert "v049" in videos and "... and 70 more; `motionfit status /r` lists them." in videos
    assert "Missing, failed" not in report.render_report(metrics, report.ReportContext())
    terminal = report.format_terminal_tables(metrics, context)
    assert "Missing, failed and excluded videos (120)" in terminal and "v049" in terminal


def test_an_appearance_teacher_is_reported_on_rgb() -> None:
    metrics = evaluation_metrics.metrics_frame(
        [
            {"method": "teacher", "metric": "top1", "value": 40.0},
            {"method": "motionfit", "metric": "top1", "value": 50.0},
        ]
    )
    by_default = dict(report.report_tables(metrics))["Target top-1 (test)"]
    rgb = dict(report.report_tables(metrics, report.ReportContext(inputs={"teacher": "RGB"})))
    assert list(by_default["Input"]) == ["flow", "RGB"]
    assert list(rgb["Target top-1 (test)"]["Input"]) == ["RGB", "RGB"]


def test_a_method_whose_label_names_a_setting_the_run_changed_is_reported_by_its_short_label(
    tmp_path,
) -> None:
    metrics = evaluation_metrics.metrics_frame(
        [
            {"method": "teacher", "metric": "top1", "value": 20.0},
            {"method": "mscl", "metric": "top1", "value": 45.0},
        ]
    )

    def names(changed: tuple[str, ...]) -> list[str]:
        context = report.ReportContext(changed=changed, inputs={"teacher": "RGB"})
        return list(dict(report.report_tables(metrics, context))["Target top-1 (test)"]["Method"])

    assert names(()) == ["Flow teacher (TV-L1)", "MSCL student (motion sampling + LMCL)"]
    assert names(("teacher.modality", "mscl.lmcl_weight")) == ["Teacher", "MSCL student"]
    layout = RunLayout.at(tmp_path)  # motionfit report renders the saved run as report.md did
    evaluation_metrics.append_metrics(layout, metrics)
    report.write_report(
        layout, report.ReportContext(changed=("teacher.modality",), inputs={"teacher": "RGB"})
    )
    (teacher_row,) = [
        line for line in report.render_report_for_terminal(str(tmp_path)).splitlines() if "20.0" in line
    ]
    assert teacher_row.split()[:2] == ["Teacher", "RGB"]
