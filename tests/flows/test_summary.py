"""The run summary of the root flow run: state, videos, failures with their reasons, results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from motionfit.flows.summary import run_summary_markdown
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import save_manifest
from motionfit.storage.tables import write_table


def _manifest(n_videos: int, failed: dict[str, str], excluded: dict[str, str] | None = None) -> pd.DataFrame:
    ids = [f"v{i:03d}" for i in range(n_videos)]
    excluded = excluded or {}
    return pd.DataFrame(
        {
            "video_id": ids,
            "dataset": "target",
            "path": [f"/videos/{i}.avi" for i in ids],
            "label": "wave",
            "label_index": 0,
            "split": "train",
            "status": "ok",
            "error": [failed.get(i) for i in ids],
            "exclusion": [excluded.get(i) for i in ids],
            "status_decode": [
                "failed" if i in failed else "excluded" if i in excluded else "done" for i in ids
            ],
        }
    )


def test_the_summary_lists_failed_videos_with_their_reasons_and_the_results(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    reasons = {f"v{i:03d}": f"decode: ValueError: broken file {i}" for i in range(60)}
    save_manifest(layout, _manifest(200, reasons))
    metrics = pd.DataFrame(
        [
            {"method": "motionfit", "metric": "top1", "value": 61.234, "split": "test", "seed": 0},
            {"method": "motionfit", "metric": "top1", "value": 12.0, "split": "test", "seed": 1},
            {"method": "scratch", "metric": "r@1", "value": 20.0, "split": "test", "seed": 0},
        ]
    )
    write_table(layout.metrics, metrics)
    markdown = run_summary_markdown(layout, "ucf101", ["ingest", "decode"], "Completed with failures", seed=0)
    assert markdown.startswith("# motionfit run ucf101: Completed with failures")
    assert "| decode | failed | 60 |" in markdown and "| decode | done | 140 |" in markdown
    assert "## Missing, failed and excluded videos (60)" in markdown
    assert "| v000 | target | train | failed | decode: ValueError: broken file 0 |" in markdown
    assert "v049" in markdown and "v050" not in markdown
    assert f"... and 10 more; `motionfit status {layout.root}` lists them." in markdown
    assert "| motionfit | 61.2 |" in markdown and "12.0" not in markdown and "scratch" not in markdown
    assert "Full report" not in markdown  # no report.md yet


def test_a_failed_run_shows_its_error_before_anything_else(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    markdown = run_summary_markdown(
        layout, "tiny", ["ingest"], "Failed at ingest", seed=0, error="DataProblems: no test videos"
    )
    assert markdown.splitlines()[0] == "# motionfit run tiny: Failed at ingest"
    assert "## Error\n\n```\nDataProblems: no test videos\n```" in markdown
    assert "Videos per stage" not in markdown


def test_the_summary_lists_excluded_videos_with_their_reason_and_they_are_not_failures(
    tmp_path: Path,
) -> None:
    layout = RunLayout.at(tmp_path)
    reason = "decode: video file /videos/v001.avi yields 5 frames, fewer than the 17 the run needs"
    save_manifest(layout, _manifest(3, {}, excluded={"v001": reason}))
    markdown = run_summary_markdown(layout, "ucf101", ["ingest", "decode"], "Completed", seed=0)
    assert "| decode | excluded | 1 |" in markdown and "| decode | done | 2 |" in markdown
    assert "## Missing, failed and excluded videos (1)" in markdown
    assert f"| v001 | target | train | excluded | {reason} |" in markdown
    assert "more;" not in markdown
