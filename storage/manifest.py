"""The run manifest: one row per video with its metadata and its status in every per-video stage."""

from __future__ import annotations

import pandas as pd

from motionfit.storage.layout import RunLayout
from motionfit.storage.markers import StageMarkers
from motionfit.storage.tables import read_table, table_exists, write_table

BASE_COLUMNS = ("video_id", "dataset", "path", "label", "label_index", "split", "status", "error")


def status_column(stage: str) -> str:
    return f"status_{stage}"


def load_manifest(layout: RunLayout) -> pd.DataFrame:
    """The run's manifest; raises FileNotFoundError naming it when the ingest stage has not run."""
    return read_table(layout.manifest)


def manifest_exists(layout: RunLayout) -> bool:
    return table_exists(layout.manifest)


def save_manifest(layout: RunLayout, manifest: pd.DataFrame) -> None:
    duplicated = manifest["video_id"][manifest["video_id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"manifest has duplicate video ids: {sorted(set(duplicated))[:5]}")
    write_table(layout.manifest, manifest.reset_index(drop=True))


def refresh_stage_status(manifest: pd.DataFrame, markers: StageMarkers, video_ids: list[str]) -> pd.DataFrame:
    """Copy of ``manifest`` whose ``status_<stage>`` says ``done``/``excluded``/``failed``/``pending`` from
    the markers.

    Only ``video_ids`` (the videos the stage was asked to process) get a status; a failure's message goes to
    ``error`` and an exclusion's reason to ``exclusion``, each prefixed with the stage name (and cleared from
    the stage's other videos).
    """
    manifest = manifest.copy()
    column = status_column(markers.stage)
    for added in (column, "exclusion"):
        if added not in manifest:
            manifest[added] = None
    committed = markers.committed_ids()
    failures = markers.failures()
    exclusions = markers.exclusions()
    in_stage = manifest["video_id"].isin(set(video_ids))
    done = manifest["video_id"].isin(committed)
    excluded = manifest["video_id"].isin(set(exclusions)) & ~done
    failed = manifest["video_id"].isin(set(failures)) & ~done & ~excluded
    prefix = f"{markers.stage}: "
    for reasons in ("error", "exclusion"):
        stale = in_stage & manifest[reasons].fillna("").str.startswith(prefix)
        manifest.loc[stale, reasons] = None
    manifest.loc[in_stage, column] = "pending"
    manifest.loc[in_stage & done, column] = "done"
    manifest.loc[in_stage & excluded, column] = "excluded"
    manifest.loc[in_stage & failed, column] = "failed"
    manifest.loc[in_stage & failed, "error"] = prefix + manifest.loc[in_stage & failed, "video_id"].map(
        failures
    )
    reasons = manifest.loc[in_stage & excluded, "video_id"].map(exclusions)
    manifest.loc[in_stage & excluded, "exclusion"] = prefix + reasons
    return manifest


def usable_videos(manifest: pd.DataFrame, *stages: str) -> pd.DataFrame:
    """Rows ingested ``ok`` and ``done`` in every one of ``stages`` (never ``excluded`` or ``failed``)."""
    keep = manifest["status"] == "ok"
    for stage in stages:
        column = status_column(stage)
        keep &= manifest[column].eq("done") if column in manifest else False
    return manifest[keep]


LEFT_OUT_COLUMNS = ["video_id", "dataset", "split", "outcome", "reason"]


def left_out_videos(manifest: pd.DataFrame) -> pd.DataFrame:
    """Every video the run cannot use and why: ``outcome`` ``missing`` (at ingest), ``failed`` or ``excluded``
    (too short or too small for the run), ``reason`` the manifest's error or exclusion (prefixed with the
    stage); columns :data:`LEFT_OUT_COLUMNS`, missing first, then failed, then excluded."""
    exclusion = manifest["exclusion"] if "exclusion" in manifest else pd.Series(None, index=manifest.index)
    missing = manifest["status"] != "ok"
    failed = ~missing & manifest["error"].notna()
    excluded = ~missing & ~failed & exclusion.notna()
    parts = [
        manifest[rows].assign(outcome=outcome, reason=reasons[rows])
        for outcome, rows, reasons in (
            ("missing", missing, manifest["error"]),
            ("failed", failed, manifest["error"]),
            ("excluded", excluded, exclusion),
        )
    ]
    return pd.concat(parts, ignore_index=True).reindex(columns=LEFT_OUT_COLUMNS)


def stage_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts of videos per stage and status: columns stage, status, videos."""
    rows = [("ingest", status, int(count)) for status, count in manifest["status"].value_counts().items()]
    for column in sorted(c for c in manifest.columns if c.startswith("status_")):
        counts = manifest[column].fillna("not scheduled").value_counts()
        rows += [(column.removeprefix("status_"), status, int(count)) for status, count in counts.items()]
    return pd.DataFrame(rows, columns=["stage", "status", "videos"])
