"""Which human box file the IDT stage gives each video (idt.human_boxes, data.human_boxes_dir)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from motionfit.config import PipelineConfig
from motionfit.flows.prior import human_box_files
from motionfit.tasks.data.ingest import build_manifest, synthetic_data_config


def _config(data_root: Path, boxes_dir: Path | None, on: bool = True) -> PipelineConfig:
    data = synthetic_data_config(data_root).model_copy(update={"human_boxes_dir": boxes_dir})
    return PipelineConfig.model_validate({"data": data.model_dump(), "idt": {"human_boxes": on}})


def test_each_video_gets_the_box_file_of_its_file_name_when_boxes_are_on(
    micro_synth_root: Path, tmp_path: Path
) -> None:
    data_root = tmp_path / "data"
    shutil.copytree(micro_synth_root, data_root)
    manifest = build_manifest(synthetic_data_config(data_root))
    video_ids = list(manifest["video_id"])
    boxes_dir = data_root / "boxes"
    (boxes_dir / "src_000001.bb").unlink()  # a video without boxes has none

    files = human_box_files(_config(data_root, boxes_dir), manifest, video_ids)

    assert len(files) == len(video_ids) - 1 and "source.src_000001" not in files
    for video_id, path in files.items():
        stem = Path(manifest.set_index("video_id").loc[video_id, "path"]).stem
        assert path == str(boxes_dir / f"{stem}.bb")
    assert human_box_files(_config(data_root, boxes_dir, on=False), manifest, video_ids) == {}
    with pytest.raises(FileNotFoundError, match="human_boxes is on but data"):
        human_box_files(_config(data_root, None), manifest, video_ids)
    twin = manifest.iloc[[0]].assign(video_id="source.twin")  # another folder, the same file name
    both = pd.concat([manifest, twin], ignore_index=True)
    with pytest.raises(ValueError, match="share a file name"):
        human_box_files(_config(data_root, boxes_dir), both, [*video_ids, "source.twin"])
