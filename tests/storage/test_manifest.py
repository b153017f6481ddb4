import numpy as np
import pandas as pd
import pytest

from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import (
    left_out_videos,
    load_manifest,
    refresh_stage_status,
    save_manifest,
    stage_summary,
    usable_videos,
)


def _manifest() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "video_id": ["a", "b", "c", "d"],
            "dataset": ["target", "target", "source", "source"],
            "path": ["/a.mp4", "/b.mp4", "/c.mp4", "/d.mp4"],
            "label": ["x", "y", None, None],
            "label_index": [0, 1, -1, -1],
            "split": ["train", "test", "unlabelled", "unlabelled"],
            "status": ["ok", "ok", "ok", "missing"],
            "error": [None, None, None, "missing file /d.mp4"],
        }
    )


def test_status_follows_markers(tmp_path) -> None:
    layout = RunLayout.at(tmp_path)
    save_manifest(layout, _manifest())
    store = layout.store("frames")
    store.write("a", np.zeros((2, 2, 2, 3), np.uint8))
    layout.markers("decode").fail("b", "VideoDecodeError: cannot open /b.mp4")
    manifest = refresh_stage_status(load_manifest(layout), layout.markers("decode"), ["a", "b", "c"])
    assert manifest.set_index("video_id")["status_decode"].to_dict() == {
        "a": "done",
        "b": "failed",
        "c": "pending",
        "d": None,
    }
    assert manifest.set_index("video_id").loc["b", "error"] == "decode: VideoDecodeError: cannot open /b.mp4"
    assert list(usable_videos(manifest, "decode")["video_id"]) == ["a"]
    summary = stage_summary(manifest)
    row = summary[(summary.stage == "decode") & (summary.status == "failed")]
    assert int(row["videos"].iloc[0]) == 1


def test_commit_clears_an_earlier_failure(tmp_path) -> None:
    layout = RunLayout.at(tmp_path)
    markers = layout.markers("flow")
    markers.fail("a", "boom")
    layout.store("flow").write("a", np.zeros((1, 2, 2, 2), np.uint8))
    assert markers.failures() == {}
    assert markers.committed_ids() == {"a"}


def test_duplicate_ids_are_rejected(tmp_path) -> None:
    manifest = pd.concat([_manifest(), _manifest().head(1)])
    with pytest.raises(ValueError, match="duplicate video ids"):
        save_manifest(RunLayout.at(tmp_path), manifest)


def test_an_excluded_video_is_not_usable_and_is_listed_with_its_reason(tmp_path) -> None:
    layout = RunLayout.at(tmp_path)
    markers = layout.markers("decode")
    markers.fail("a", "VideoDecodeError: cannot open /a.mp4")
    markers.exclude("a", "video file /a.mp4 yields 5 frames, fewer than the 9 the run needs", inputs_key="k")
    markers.fail("b", "VideoDecodeError: cannot open /b.mp4")
    assert markers.failures() == {"b": "VideoDecodeError: cannot open /b.mp4"}, "exclusion clears the failure"
    manifest = refresh_stage_status(_manifest(), markers, ["a", "b", "c"]).set_index("video_id")
    assert manifest["status_decode"].to_dict() == {"a": "excluded", "b": "failed", "c": "pending", "d": None}
    assert (
        manifest.loc["a", "exclusion"]
        == "decode: video file /a.mp4 yields 5 frames, fewer than the 9 the run needs"
    )
    assert pd.isna(manifest.loc["a", "error"])
    left_out = left_out_videos(manifest.reset_index())
    assert list(zip(left_out["video_id"], left_out["outcome"], strict=True)) == [
        ("d", "missing"),
        ("b", "failed"),
        ("a", "excluded"),
    ]
    assert left_out.iloc[2]["reason"].startswith("decode: video file /a.mp4 yields 5 frames")

    store = layout.store("frames")
    store.write("a", np.zeros((2, 2, 2, 3), np.uint8))
    assert markers.exclusions() == {}, "a commit clears the exclusion"
    manifest = refresh_stage_status(manifest.reset_index(), markers, ["a", "b", "c"]).set_index("video_id")
    assert manifest.loc["a", "status_decode"] == "done" and pd.isna(manifest.loc["a", "exclusion"])
