"""Tests of data set ingestion: every format, CRLF, missing files, malformed lines, ids, label fractions."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from motionfit.storage.manifest import BASE_COLUMNS
from motionfit.tasks.data.config import DataConfig, SynthConfig
from motionfit.tasks.data.ingest import (
    IngestError,
    build_manifest,
    chosen_sources,
    ingest_csv,
    ingest_folder,
    ingest_hmdb51,
    ingest_kinetics,
    ingest_source,
    ingest_target,
    ingest_ucf101,
    keep_labelled_fraction,
    synthetic_data_config,
    video_id_for,
)
from motionfit.tasks.data.synth import generate_dataset, plan_dataset

SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    return path


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def _ucf101(tmp_path: Path, newline: str = "\r\n") -> tuple[Path, Path]:
    """A two-class UCF101 tree with CRLF split files; one listed video is missing, one exists as .mp4 only."""
    videos, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    _write(splits / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n", newline)
    _write(
        splits / "trainlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
        "HandstandPushups/v_HandStandPushups_g09_c01.avi 2\n",
        newline,
    )
    _write(splits / "testlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n\n", newline)
    _touch(videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")
    _touch(videos / "HandstandPushups/v_HandStandPushups_g08_c01.mp4")
    _touch(videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    return videos, splits


def test_ucf101_reads_crlf_split_files_and_records_missing_videos(tmp_path: Path) -> None:
    videos, splits = _ucf101(tmp_path)
    manifest = ingest_ucf101(videos, splits, split=1)
    assert list(manifest.columns) == list(BASE_COLUMNS)
    assert manifest["video_id"].tolist() == [
        "target.ApplyEyeMakeup.v_ApplyEyeMakeup_g08_c01",
        "target.HandstandPushups.v_HandStandPushups_g08_c01",
        "target.HandstandPushups.v_HandStandPushups_g09_c01",
        "target.ApplyEyeMakeup.v_ApplyEyeMakeup_g01_c01",
    ]
    assert manifest["label_index"].tolist() == [0, 1, 1, 0]
    assert manifest["label"].tolist() == [
        "ApplyEyeMakeup",
        "HandstandPushups",
        "HandstandPushups",
        "ApplyEyeMakeup",
    ]
    assert manifest["split"].tolist() == ["train", "train", "train", "test"]
    assert manifest["status"].tolist() == ["ok", "ok", "missing", "ok"]
    assert manifest["path"][1] == str((videos / "HandstandPushups/v_HandStandPushups_g08_c01.mp4").absolute())
    assert "v_HandStandPushups_g09_c01.avi" in manifest["error"][2]
    assert manifest["error"][0] is None
    assert manifest.equals(ingest_ucf101(videos, splits, split=1)), "ids and rows must be stable across calls"


def test_ucf101_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    videos, splits = _ucf101(tmp_path, newline="\n")
    train = splits / "trainlist01.txt"
    original = train.read_text()
    _write(train, original + "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 1 extra\n")
    with pytest.raises(IngestError, match=r"trainlist01\.txt:4"):
        ingest_ucf101(videos, splits)
    _write(train, original + "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 2\n")
    with pytest.raises(IngestError, match=r"trainlist01\.txt:4: label number 2 disagrees"):
        ingest_ucf101(videos, splits)
    _write(train, "Jumping/v_Jumping_g01_c01.avi 1\n")
    with pytest.raises(IngestError, match=r"trainlist01\.txt:1: class folder 'Jumping'"):
        ingest_ucf101(videos, splits)
    with pytest.raises(IngestError, match=r"trainlist02\.txt does not exist"):
        ingest_ucf101(videos, splits, split=2)
    _write(splits / "classInd.txt", "1 ApplyEyeMakeup\n3 HandstandPushups\n")
    with pytest.raises(IngestError, match="class numbers"):
        ingest_ucf101(videos, splits)


def test_hmdb51_keeps_train_and_test_and_sanitises_ids(tmp_path: Path) -> None:
    videos, splits = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    _write(
        splits / "brush_hair_test_split1.txt",
        "Glory_(1989)_brush_hair_f_nm_np1_ba_goo_0.avi 1 \nApril_09_brush_hair_u_nm_np1_ba_goo_0.avi 2 \n",
        "\r\n",
    )
    _write(splits / "wave_test_split1.txt", "wave_hi_1.avi 0 \nwave_hi_2.avi 1 \n")
    _write(splits / "wave_test_split2.txt", "wave_hi_1.avi 1 \n")
    _touch(videos / "brush_hair/Glory_(1989)_brush_hair_f_nm_np1_ba_goo_0.avi")
    _touch(videos / "wave/wave_hi_2.avi")
    manifest = ingest_hmdb51(videos, splits, split=1)
    assert manifest["video_id"].tolist() == [
        "target.brush_hair.Glory__1989__brush_hair_f_nm_np1_ba_goo_0",
        "target.brush_hair.April_09_brush_hair_u_nm_np1_ba_goo_0",
        "target.wave.wave_hi_2",
    ]
    assert manifest["split"].tolist() == ["train", "test", "train"]
    assert manifest["label_index"].tolist() == [0, 0, 1]
    assert manifest["status"].tolist() == ["ok", "missing", "ok"]
    _write(splits / "wave_test_split1.txt", "wave_hi_1.avi 0\nwave_hi_2.avi 3\n")
    with pytest.raises(IngestError, match=r"wave_test_split1\.txt:2"):
        ingest_hmdb51(videos, splits, split=1)
    with pytest.raises(IngestError, match="no HMDB51 split files"):
        ingest_hmdb51(videos, splits, split=3)


def test_kinetics_finds_split_label_and_flat_layouts(tmp_path: Path) -> None:
    root = tmp_path / "kinetics"
    csv_path = _write(
        tmp_path / "kinetics400_train.csv",
        "label,youtube_id,time_start,time_end,split\n"
        "air drumming,--nQbRBEz2s,104,114,train\n"
        "abseiling,-3B32lodo2M,59.0,69,train\n"
        "abseiling,zzzzzzzzzzz,0,10,val\n"
        ",noLabel0001,5,15,\n",
        "\r\n",
    )
    _touch(root / "train/air_drumming/--nQbRBEz2s_000104_000114.mp4")
    _touch(root / "-3B32lodo2M_000059_000069.mkv")
    _touch(root / "noLabel0001_000005_000015.mp4")
    manifest = ingest_kinetics(csv_path, root)
    assert manifest["video_id"].tolist() == [
        "source.--nQbRBEz2s_000104_000114",
        "source.-3B32lodo2M_000059_000069",
        "source.zzzzzzzzzzz_000000_000010",
        "source.noLabel0001_000005_000015",
    ]
    assert manifest["status"].tolist() == ["ok", "ok", "missing", "ok"]
    assert manifest["path"][0].endswith("train/air_drumming/--nQbRBEz2s_000104_000114.mp4")
    assert "zzzzzzzzzzz_000000_000010" in manifest["error"][2]
    assert manifest["label_index"].tolist() == [1, 0, 0, -1]
    assert manifest["split"].tolist() == ["train", "train", "val", "unlabelled"]
    _write(csv_path, "label,youtube_id,time_start,time_end,split\nabseiling,x,ten,20,train\n")
    with pytest.raises(IngestError, match=r"kinetics400_train\.csv:2: expected a time"):
        ingest_kinetics(csv_path, root)
    _write(csv_path, "label,youtube_id,time_start,time_end,split\nabseiling,x,10,20\n")
    with pytest.raises(IngestError, match=r"kinetics400_train\.csv:2: expected 5 fields"):
        ingest_kinetics(csv_path, root)
    _write(csv_path, "label,youtube_id,start,end\n")
    with pytest.raises(IngestError, match="lacks the columns"):
        ingest_kinetics(csv_path, root)


def test_csv_resolves_relative_paths_and_checks_splits(tmp_path: Path) -> None:
    outside = _touch(tmp_path / "elsewhere" / "clip 1.avi")
    _touch(tmp_path / "data" / "videos" / "a.mp4")
    csv_path = _write(
        tmp_path / "data" / "target.csv",
        f"path,label,split\nvideos/a.mp4,walk,train\nvideos/b.mp4,run,test\n{outside},walk,val\n",
    )
    manifest = ingest_csv(csv_path, role="target")
    assert manifest["video_id"][0] == "target.videos.a"
    assert manifest["video_id"][2].endswith(".elsewhere.clip_1") and SAFE_ID.match(manifest["video_id"][2])
    assert manifest["path"].tolist() == [
        str((tmp_path / "data/videos/a.mp4").absolute()),
        str((tmp_path / "data/videos/b.mp4").absolute()),
        str(outside),
    ]
    assert manifest["status"].tolist() == ["ok", "missing", "ok"]
    assert manifest["label_index"].tolist() == [1, 0, 1]
    assert manifest["split"].tolist() == ["train", "test", "val"]

    unlabelled = ingest_csv(_write(tmp_path / "source.csv", "path\nx.mp4\n"), role="source")
    assert unlabelled[["label", "label_index", "split"]].values.tolist() == [[None, -1, "unlabelled"]]
    for body, message in (
        ("path,label,split\nx.mp4,walk,holdout\n", r"bad\.csv:2: split 'holdout'"),
        ("path,label,split\nx.mp4,walk,unlabelled\n", r"bad\.csv:2: split 'unlabelled' cannot carry"),
        ("path,label,split\nx.mp4,,test\n", r"bad\.csv:2: split 'test' needs a label"),
        ("label,split\nwalk,train\n", "lacks the columns"),
    ):
        with pytest.raises(IngestError, match=message):
            ingest_csv(_write(tmp_path / "bad.csv", body), role="target")


def test_folder_is_recursive_skips_hidden_and_rejects_colliding_ids(tmp_path: Path) -> None:
    for name in ("b/clip.MP4", "a.webm", "notes.txt", ".partial/x.mp4", "c/._y.mp4"):
        _touch(tmp_path / "videos" / name)
    manifest = ingest_folder(tmp_path / "videos")
    assert manifest["video_id"].tolist() == ["source.a", "source.b.clip"]
    assert (manifest["status"] == "ok").all() and (manifest["split"] == "unlabelled").all()
    _touch(tmp_path / "videos" / "a.mp4")
    with pytest.raises(IngestError, match=r"source\.a"):
        ingest_folder(tmp_path / "videos")
    with pytest.raises(IngestError, match="does not exist"):
        ingest_folder(tmp_path / "nowhere")


def test_video_ids_are_key_safe() -> None:
    assert video_id_for("target", "Walk/v_Walk g01 (2)#.avi") == "target.Walk.v_Walk_g01__2__"
    assert video_id_for("source", "./a/../b.mp4") == "source.a._.b"
    assert all(SAFE_ID.match(video_id_for("t", path)) for path in ("ü/ß.mp4", "a:b/c?d.avi", "x y z.mkv"))


def test_labelled_fraction_is_class_stratified_and_seeded(tmp_path: Path) -> None:
    rows = [
        {"video_id": f"target.{label}.{i}", "label": label, "label_index": k, "split": split}
        for k, label in enumerate(("a", "b", "c"))
        for i, split in enumerate(["train"] * 10 + ["test"] * 3)
    ]
    manifest = pd.DataFrame(rows)
    kept = keep_labelled_fraction(manifest, 0.2, seed=0)
    train = kept[kept["split"] == "train"]
    assert train.groupby(manifest["label"])["label"].count().tolist() == [2, 2, 2]
    assert (train["label_index"][train["label"].isna()] == -1).all()
    assert kept[kept["split"] == "test"]["label"].notna().all()
    assert kept.equals(keep_labelled_fraction(manifest, 0.2, seed=0))
    assert not kept["label"].equals(keep_labelled_fraction(manifest, 0.2, seed=1)["label"])
    assert keep_labelled_fraction(manifest, 0.01, seed=0)["label"].notna().sum() == 3 + 9
    with pytest.raises(IngestError, match="labelled_fraction"):
        keep_labelled_fraction(manifest, 0.0, seed=0)


def test_uniform_labelled_sampling_draws_over_the_whole_train_split() -> None:
    rows = [
        {"video_id": f"target.{label}.{i}", "label": label, "label_index": k, "split": "train"}
        for k, (label, n) in enumerate((("a", 16), ("b", 2), ("c", 2)))
        for i in range(n)
    ]
    manifest = pd.DataFrame(rows)
    per_class = []
    for seed in range(20):
        kept = keep_labelled_fraction(manifest, 0.25, seed=seed, sampling="uniform")
        assert kept["label"].notna().sum() == 5  # a quarter of the 20, whatever their classes
        per_class.append(kept.groupby(manifest["label"])["label"].count())
    counts = pd.DataFrame(per_class)
    assert (counts.min() == 0).any(), "uniform sampling may leave a class without labels"
    assert counts["a"].mean() > 3  # about 16 / 20 of them
    category = keep_labelled_fraction(manifest, 0.25, seed=0, sampling="category")
    assert category.groupby(manifest["label"])["label"].count().tolist() == [4, 1, 1]
    with pytest.raises(IngestError, match="labelled_sampling"):
        keep_labelled_fraction(manifest, 0.25, seed=0, sampling="balanced")


def test_data_config_dispatch_hides_source_and_unselected_labels(tmp_path: Path) -> None:
    videos, splits = _ucf101(tmp_path)
    root = tmp_path / "kinetics"
    csv_path = _write(
        root / "k.csv", "label,youtube_id,time_start,time_end,split\nabseiling,abc,0,10,train\n"
    )
    _touch(root / "abc_000000_000010.mp4")
    config = DataConfig(
        target_video_root=videos,
        target_splits_dir=splits,
        labelled_fraction=0.5,
        source_format="kinetics",
        source_csv=csv_path,
        source_video_root=root,
    )
    manifest = build_manifest(config)
    target = manifest[manifest["dataset"] == "target"]
    assert target["heldout_label"].notna().all()
    assert target[target["split"] == "train"]["label"].notna().sum() == 2, "one label kept per class"
    source = manifest[manifest["dataset"] == "source"]
    assert source[["label", "label_index", "split", "heldout_label"]].values.tolist() == [
        [None, -1, "unlabelled", "abseiling"]
    ]
    assert ingest_source(DataConfig()).empty
    with pytest.raises(IngestError, match="target_csv is required"):
        ingest_target(DataConfig(target_format="csv"))
    with pytest.raises(IngestError, match="source_video_root is required"):
        ingest_source(DataConfig(source_format="folder"))


def test_synthetic_data_set_ingests_with_heldout_source_labels(tmp_path: Path) -> None:
    config = SynthConfig(
        frame_size_px=(32, 32),
        n_frames=8,
        classes=["TranslateDown", "ZoomOut"],
        n_train_per_class=2,
        n_test_per_class=1,
        n_source_per_class=3,
    )
    generate_dataset(tmp_path, config)
    manifest = build_manifest(synthetic_data_config(tmp_path))
    assert (manifest["status"] == "ok").all()
    assert manifest["video_id"].map(lambda video_id: bool(SAFE_ID.match(video_id))).all()
    target = manifest[manifest["dataset"] == "target"]
    assert target.groupby(["split", "label"]).size().to_dict() == {
        ("test", "TranslateDown"): 1,
        ("test", "ZoomOut"): 1,
        ("train", "TranslateDown"): 2,
        ("train", "ZoomOut"): 2,
    }
    assert (target["label_index"] == target["label"].map({"TranslateDown": 0, "ZoomOut": 1})).all()
    source = manifest[manifest["dataset"] == "source"]
    assert source["label"].isna().all() and (source["split"] == "unlabelled").all()
    planned = {spec.relative_path: spec.class_name for spec in plan_dataset(config) if spec.role == "source"}
    assert (
        dict(zip(source["path"].map(lambda p: Path(p).name), source["heldout_label"], strict=True)) == planned
    )


@pytest.mark.parametrize("mode", ["none", "hidden", "all"])
def test_semi_supervised_source_takes_the_configured_target_train_videos_and_never_test(
    micro_synth_root: Path, mode: str
) -> None:
    from motionfit.tasks.data.clips import labelled_videos, unlabelled_videos

    config = synthetic_data_config(micro_synth_root).model_copy(
        update={"labelled_fraction": 0.5, "target_train_in_source": mode}
    )
    manifest = build_manifest(config)
    target = manifest[manifest["dataset"] == "target"]
    train = set(target.loc[target["split"] == "train", "video_id"])
    mplg = set(labelled_videos(manifest)["video_id"])  # the teacher's labelled videos: one per class here
    source = set(manifest.loc[manifest["dataset"] == "source", "video_id"])
    expected = {"none": source, "hidden": source | (train - mplg), "all": source | train}[mode]
    pool = unlabelled_videos(manifest)
    assert set(pool) == expected and len(mplg) == 3 and len(train) == 6
    assert not set(pool) & set(target.loc[target["split"] == "test", "video_id"])


def test_a_dangling_link_in_a_folder_is_listed_as_missing(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    _touch(folder / "kept.mp4")
    (folder / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    manifest = ingest_folder(folder).set_index("path")
    gone = manifest.loc[str(folder / "gone.mp4")]
    assert gone["status"] == "missing"
    assert gone["error"] == f"dangling symbolic link: {folder / 'gone.mp4'} -> {tmp_path / 'deleted.mp4'}"
    assert manifest.loc[str(folder / "kept.mp4"), "status"] == "ok"


def test_max_source_videos_keeps_a_seeded_uniform_choice_of_the_source(tmp_path: Path) -> None:
    for index in range(10):
        (tmp_path / "pool" / f"v{index}.mp4").parent.mkdir(exist_ok=True)
        (tmp_path / "pool" / f"v{index}.mp4").write_bytes(b"")
    full = ingest_source(DataConfig(source_format="folder", source_video_root=tmp_path / "pool"))
    config = DataConfig(source_format="folder", source_video_root=tmp_path / "pool", max_source_videos=4)
    chosen = chosen_sources(full, config)
    assert len(chosen) == 4 and set(chosen["video_id"]) <= set(full["video_id"])
    assert chosen_sources(full.iloc[::-1], config)["video_id"].tolist() == chosen["video_id"].tolist()
    other = chosen_sources(full, config.model_copy(update={"source_seed": 1}))
    assert set(other["video_id"]) != set(chosen["video_id"])
    assert len(chosen_sources(full, config.model_copy(update={"max_source_videos": 20}))) == 10
