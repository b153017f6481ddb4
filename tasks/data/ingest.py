"""Ingest video data sets into manifest rows (the first stage of the pipeline).

Every ``ingest_*`` function returns a DataFrame with the manifest's base columns:

- ``video_id``: stable and unique, made of ``[A-Za-z0-9_.-]`` only (safe as a file name and a zarr key):
  the role, then the video's path relative to its data set root without extension, ``/`` turned into
  ``.`` and any other character into ``_`` (``target.ApplyEyeMakeup.v_ApplyEyeMakeup_g01_c01``). Two
  videos that sanitise to the same id raise :class:`IngestError`.
- ``dataset``: the role, "target" or "source"; ``path``: absolute path string;
- ``label`` (class name or None), ``label_index`` (0-based, -1 without label);
- ``split``: "train", "test", "val" or "unlabelled";
- ``status``: "ok", or "missing" with ``error`` naming the path looked for. A missing file never stops
  ingestion; a malformed line in a split or CSV file does: :class:`IngestError` names the file and the
  line number (a typo must not silently drop data).

Files named ``x.avi`` in a split file are also found as ``x.mp4`` (or another video extension), so
transcoded copies of UCF101/HMDB51 work with the original split files. Hidden files and folders (names
starting with ``.``) are never ingested from folders.

:func:`build_manifest` composes a target and a source data set from a :class:`DataConfig` and adds
``heldout_label``: the true class where known, for diagnostics only (never for training). Source videos
are always unlabelled in ``label``; target train videos outside the labelled fraction are too.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from motionfit.storage.manifest import BASE_COLUMNS
from motionfit.tasks.data.config import LABELLED_SAMPLINGS, DataConfig, LabelledSampling
from motionfit.tasks.data.synth import SynthLayout

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov")
SPLITS: tuple[str, ...] = ("train", "test", "val", "unlabelled")
MANIFEST_COLUMNS: tuple[str, ...] = (*BASE_COLUMNS, "heldout_label")
_SPLIT_ALIASES = {"validate": "val", "valid": "val", "validation": "val", "": ""}
_UNSAFE_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]")


class IngestError(ValueError):
    """A data set description (split file, CSV, folder, config) is malformed or inconsistent."""


def video_id_for(role: str, relative_path: str) -> str:
    """Manifest id of the video at ``relative_path`` (posix, relative to its data set root) in ``role``."""
    parts = [part for part in PurePosixPath(relative_path).parts if part not in ("/", ".")]
    if not parts:
        raise IngestError(f"cannot make a video id from the empty path {relative_path!r}")
    parts[-1] = PurePosixPath(parts[-1]).stem
    safe = [_UNSAFE_ID_CHARACTERS.sub("_", "_" if part == ".." else part) for part in parts]
    return ".".join([role, *safe])


def ingest_ucf101(video_root: Path, splits_dir: Path, split: int = 1, role: str = "target") -> pd.DataFrame:
    """UCF101 layout: ``classInd.txt`` ("1 ApplyEyeMakeup"), ``trainlist0N.txt`` ("Class/v_..._g08_c01.avi 1")
    and ``testlist0N.txt`` ("Class/v_..._g01_c01.avi"), CRLF or LF; videos under ``video_root/Class/``.

    Label indices follow classInd (number - 1). The class is the path's folder, matched to classInd names
    case-insensitively; a train line's number is optional but must agree with that folder when present.
    """
    splits_dir = Path(splits_dir)
    class_numbers = _read_class_index(splits_dir / "classInd.txt")
    index_by_lower = {name.lower(): index for name, index in class_numbers.items()}
    names = {index: name for name, index in class_numbers.items()}
    rows = []
    for split_name, file_name in (
        ("train", f"trainlist{split:02d}.txt"),
        ("test", f"testlist{split:02d}.txt"),
    ):
        list_path = splits_dir / file_name
        for line_number, fields in _read_fields(list_path):
            if len(fields) not in (1, 2):
                raise _line_error(list_path, line_number, "'<Class>/<video> [<label number>]'", fields)
            relative = fields[0]
            folder = PurePosixPath(relative).parts[0] if len(PurePosixPath(relative).parts) > 1 else ""
            label_index = index_by_lower.get(folder.lower())
            if label_index is None:
                raise IngestError(
                    f"{list_path}:{line_number}: class folder {folder!r} is not in classInd.txt"
                )
            if len(fields) == 2 and _parse_int(fields[1], list_path, line_number) - 1 != label_index:
                raise IngestError(
                    f"{list_path}:{line_number}: label number {fields[1]} disagrees with class folder "
                    f"{folder!r} (classInd number {label_index + 1})"
                )
            rows.append(
                _row(role, relative, Path(video_root) / relative, names[label_index], label_index, split_name)
            )
    return _frame(rows)


def ingest_hmdb51(video_root: Path, splits_dir: Path, split: int = 1, role: str = "target") -> pd.DataFrame:
    """HMDB51 layout: one ``<class>_test_split<N>.txt`` per class with lines ``name.avi 0|1|2`` (1 train,
    2 test, 0 unused and left out); videos under ``video_root/<class>/``. Label indices: sorted classes."""
    split_files = sorted(Path(splits_dir).glob(f"*_test_split{split}.txt"))
    if not split_files:
        raise IngestError(f"no HMDB51 split files *_test_split{split}.txt in {splits_dir}")
    suffix = f"_test_split{split}.txt"
    class_indices = {
        name: index for index, name in enumerate(sorted(p.name[: -len(suffix)] for p in split_files))
    }
    rows = []
    for split_path in split_files:
        class_name = split_path.name[: -len(suffix)]
        for line_number, fields in _read_fields(split_path):
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise _line_error(split_path, line_number, "'<video name> 0|1|2'", fields)
            if fields[1] == "0":
                continue
            split_name = "train" if fields[1] == "1" else "test"
            relative = f"{class_name}/{fields[0]}"
            rows.append(
                _row(
                    role,
                    relative,
                    Path(video_root) / relative,
                    class_name,
                    class_indices[class_name],
                    split_name,
                )
            )
    return _frame(rows)


def ingest_kinetics(csv_path: Path, video_root: Path, role: str = "source") -> pd.DataFrame:
    """Kinetics CSV ``label,youtube_id,time_start,time_end,split`` (label and split may be absent or empty).

    A clip's file is ``<youtube_id>_<time_start:06d>_<time_end:06d>`` with any video extension, found
    anywhere under ``video_root``: this covers the downloader layout ``<split>/<label>/<file>`` as well as a
    flat folder; when several files share the name, the one under ``<split>/<label>`` wins. Label indices:
    sorted label names. Ids are ``<role>.<youtube_id>_<start>_<end>``, whatever the layout.
    """
    csv_path = Path(csv_path)
    records = _read_csv(
        csv_path, required=("youtube_id", "time_start", "time_end"), optional=("label", "split")
    )
    files_by_stem = _index_video_files(Path(video_root))
    label_indices = _label_indices(records)
    rows = []
    for line_number, record in records:
        start = _parse_seconds(record["time_start"], csv_path, line_number)
        end = _parse_seconds(record["time_end"], csv_path, line_number)
        stem = f"{record['youtube_id']}_{start:06d}_{end:06d}"
        label = record["label"] or None
        split_name = _normalise_split(record["split"], label is not None, csv_path, line_number)
        found = _pick_kinetics_file(files_by_stem.get(stem, []), split_name, label)
        error = None if found else f"no video file named {stem}.<ext> under {Path(video_root).absolute()}"
        rows.append(
            {
                "video_id": video_id_for(role, stem),
                "dataset": role,
                "path": os.path.abspath(found or Path(video_root) / f"{stem}.mp4"),
                "label": label,
                "label_index": label_indices.get(label, -1),
                "split": split_name,
                "status": "ok" if found else "missing",
                "error": error,
            }
        )
    return _frame(rows)


def ingest_csv(csv_path: Path, role: str) -> pd.DataFrame:
    """CSV with a ``path`` column and optional ``label`` and ``split`` columns; relative paths are resolved
    against the CSV's folder. An empty label means unlabelled; an empty or absent split means "train" for
    labelled and "unlabelled" for unlabelled rows; a label with split "unlabelled", or a train/test/val row
    without label, raises :class:`IngestError`. Label indices: sorted label names."""
    csv_path = Path(csv_path)
    records = _read_csv(csv_path, required=("path",), optional=("label", "split"))
    label_indices = _label_indices(records)
    rows = []
    for line_number, record in records:
        if not record["path"]:
            raise IngestError(f"{csv_path}:{line_number}: empty path")
        label = record["label"] or None
        split_name = _normalise_split(record["split"], label is not None, csv_path, line_number)
        key = _key_path(Path(record["path"]), csv_path.parent)
        file_path = csv_path.parent / record["path"]
        rows.append(_row(role, key, file_path, label, label_indices.get(label, -1), split_name))
    return _frame(rows)


def ingest_folder(
    folder: Path, role: str = "source", extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> pd.DataFrame:
    """Every video under ``folder`` (recursive, extensions case-insensitive, hidden entries skipped), sorted,
    unlabelled; a symbolic link whose target is gone is listed too, as missing. Raises :class:`IngestError`
    when ``folder`` is not a directory."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"video folder {folder} does not exist or is not a directory")
    wanted = {extension.lower() for extension in extensions}
    relatives = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.suffix.lower() in wanted
        and (path.is_file() or path.is_symlink())
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    return _frame([_row(role, relative, folder / relative, None, -1, "unlabelled") for relative in relatives])


def keep_labelled_fraction(
    manifest: pd.DataFrame, fraction: float, seed: int, sampling: LabelledSampling = "category"
) -> pd.DataFrame:
    """Copy of ``manifest`` keeping the labels of a seeded ``fraction`` of its labelled train rows; the others
    get ``label`` None and ``label_index`` -1.

    ``sampling`` is CMPL's data partition protocol: ``category`` keeps the fraction of every class (at least
    one video each), ``uniform`` the fraction of the whole train split drawn at random (at least one video),
    so a class may keep more, fewer or none of its labels."""
    if not 0 < fraction <= 1:
        raise IngestError(f"labelled_fraction must be in (0, 1], got {fraction}")
    if sampling not in LABELLED_SAMPLINGS:
        raise IngestError(f"labelled_sampling must be one of {LABELLED_SAMPLINGS}, got {sampling!r}")
    manifest = manifest.copy()
    labelled_train = manifest[(manifest["split"] == "train") & manifest["label"].notna()]
    rng = np.random.default_rng(seed)
    if sampling == "uniform":
        pools = [labelled_train.sort_values("video_id").index.to_numpy()]
    else:
        pools = [
            rows.sort_values("video_id").index.to_numpy()
            for _, rows in sorted(labelled_train.groupby("label"), key=lambda item: item[0])
        ]
    hidden: list[int] = []
    for ordered in pools:
        n_keep = max(1, math.floor(fraction * len(ordered) + 0.5))
        hidden += ordered[rng.permutation(len(ordered))[n_keep:]].tolist()
    manifest.loc[hidden, "label"] = None
    manifest.loc[hidden, "label_index"] = -1
    return manifest


def read_heldout_labels(csv_path: Path) -> dict[str, str]:
    """Absolute video path -> label from a CSV ``path,label`` (relative paths against the CSV's folder)."""
    csv_path = Path(csv_path)
    records = _read_csv(csv_path, required=("path", "label"), optional=())
    labels = {}
    for line_number, record in records:
        if not record["path"] or not record["label"]:
            raise IngestError(f"{csv_path}:{line_number}: expected a path and a label, got {record}")
        labels[os.path.abspath(csv_path.parent / record["path"])] = record["label"]
    return labels


def ingest_target(config: DataConfig) -> pd.DataFrame:
    """Target rows described by ``config`` with ``heldout_label`` (the true label of every row) and only
    ``config.labelled_fraction`` of the train labels visible in ``label``."""
    if config.target_format == "csv":
        manifest = ingest_csv(_required(config, "target_csv"), role="target")
    else:
        reader = ingest_ucf101 if config.target_format == "ucf101" else ingest_hmdb51
        manifest = reader(
            _required(config, "target_video_root"),
            _required(config, "target_splits_dir"),
            config.split,
            "target",
        )
    manifest["heldout_label"] = manifest["label"]
    if config.labelled_fraction < 1:
        manifest = keep_labelled_fraction(
            manifest, config.labelled_fraction, config.labelled_seed, config.labelled_sampling
        )
    return manifest[list(MANIFEST_COLUMNS)]


def ingest_source(config: DataConfig) -> pd.DataFrame:
    """Source rows described by ``config``, all unlabelled (split "unlabelled", label None); labels found in
    the source description or in ``config.source_heldout_labels`` go to ``heldout_label`` only."""
    if config.source_format == "none":
        return _frame([]).assign(heldout_label=None)[list(MANIFEST_COLUMNS)]
    if config.source_format == "kinetics":
        manifest = ingest_kinetics(
            _required(config, "source_csv"), _required(config, "source_video_root"), "source"
        )
    elif config.source_format == "folder":
        manifest = ingest_folder(_required(config, "source_video_root"), role="source")
    else:
        manifest = ingest_csv(_required(config, "source_csv"), role="source")
    manifest["heldout_label"] = manifest["label"]
    if config.source_heldout_labels is not None:
        heldout = read_heldout_labels(config.source_heldout_labels)
        known = manifest["path"].map(heldout)
        manifest["heldout_label"] = known.where(known.notna(), manifest["heldout_label"])
        logger.info("held-out labels for %d of %d source videos", int(known.notna().sum()), len(manifest))
    manifest["label"] = None
    manifest["label_index"] = -1
    manifest["split"] = "unlabelled"
    return manifest[list(MANIFEST_COLUMNS)]


def chosen_sources(sources: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    """``config.max_source_videos`` of the source rows, chosen uniformly with ``config.source_seed`` (from the
    rows in id order, so the choice does not depend on how the files were listed); all when unset."""
    if config.max_source_videos is None or len(sources) <= config.max_source_videos:
        return sources
    ordered = sources.sort_values("video_id", kind="stable")
    rng = np.random.default_rng(config.source_seed)
    keep = np.sort(rng.choice(len(ordered), config.max_source_videos, replace=False))
    return ordered.iloc[keep].sort_index()


def build_manifest(config: DataConfig) -> pd.DataFrame:
    """Target and source rows together (columns :data:`MANIFEST_COLUMNS`); ids are unique across both.

    ``in_source`` marks the unlabelled pool that pseudo-labelling, the students and the IDT prior use: every
    source video, the target's ``unlabelled`` split, and the target train videos that
    ``config.target_train_in_source`` names. No target test or val video is ever in it.
    """
    manifest = pd.concat(
        [ingest_target(config), chosen_sources(ingest_source(config), config)], ignore_index=True
    )
    _check_unique_ids(manifest)
    target_train = (manifest["dataset"] == "target") & (manifest["split"] == "train")
    in_source = (manifest["dataset"] == "source") | (manifest["split"] == "unlabelled")
    if config.target_train_in_source == "all":
        in_source |= target_train
    elif config.target_train_in_source == "hidden":
        in_source |= target_train & (manifest["label_index"] < 0)
    return manifest.assign(in_source=in_source.to_numpy(dtype=bool))


def synthetic_data_config(root: Path) -> DataConfig:
    """DataConfig of the data set that :func:`.synth.generate_dataset` wrote at ``root``."""
    layout = SynthLayout(Path(root))
    has_source = layout.source_videos.is_dir()
    return DataConfig(
        target_format="ucf101",
        target_video_root=layout.target_videos,
        target_splits_dir=layout.target_splits,
        split=1,
        source_format="folder" if has_source else "none",
        source_video_root=layout.source_videos if has_source else None,
        source_heldout_labels=layout.source_heldout_labels if has_source else None,
        human_boxes_dir=layout.boxes,
    )


def _row(
    role: str, key: str, expected: Path, label: str | None, label_index: int, split_name: str
) -> dict[str, object]:
    """Manifest row of the video identified by ``key`` (posix path) and expected at ``expected``."""
    path, error = _locate(expected)
    return {
        "video_id": video_id_for(role, key),
        "dataset": role,
        "path": path,
        "label": label,
        "label_index": label_index,
        "split": split_name,
        "status": "missing" if error else "ok",
        "error": error,
    }


def _locate(expected: Path) -> tuple[str, str | None]:
    """Absolute path of ``expected`` (or of a sibling with another video extension) and an error or None."""
    if expected.is_file():
        return os.path.abspath(expected), None
    if expected.is_symlink():
        target = os.readlink(expected)
        return os.path.abspath(expected), f"dangling symbolic link: {os.path.abspath(expected)} -> {target}"
    for extension in VIDEO_EXTENSIONS:
        alternative = expected.with_suffix(extension)
        if alternative.is_file():
            return os.path.abspath(alternative), None
    return os.path.abspath(expected), f"video file not found: {os.path.abspath(expected)}"


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows as a DataFrame with the base columns in order; raises IngestError on duplicate ids."""
    frame = pd.DataFrame(rows, columns=list(BASE_COLUMNS))
    frame["label_index"] = frame["label_index"].astype(np.int64)
    for column in ("label", "error"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    _check_unique_ids(frame)
    return frame


def _check_unique_ids(frame: pd.DataFrame) -> None:
    duplicated = frame[frame["video_id"].duplicated(keep=False)]
    if len(duplicated):
        examples = duplicated.groupby("video_id")["path"].apply(list).head(3).to_dict()
        raise IngestError(
            f"{duplicated['video_id'].nunique()} video ids are shared by several entries after sanitising "
            f"(listed twice, or names differing only in extension or characters outside [A-Za-z0-9_.-]): "
            f"{examples}"
        )


def _read_fields(path: Path) -> list[tuple[int, list[str]]]:
    """Whitespace-separated fields of each non-blank line of ``path``, 1-based line numbers (LF or CRLF)."""
    if not path.is_file():
        raise IngestError(f"split file {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    return [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _read_class_index(path: Path) -> dict[str, int]:
    """classInd.txt as class name -> 0-based index; numbers must be 1..K, each once."""
    numbers: dict[str, int] = {}
    for line_number, fields in _read_fields(path):
        if len(fields) != 2:
            raise _line_error(path, line_number, "'<number> <ClassName>'", fields)
        numbers[fields[1]] = _parse_int(fields[0], path, line_number)
    if sorted(numbers.values()) != list(range(1, len(numbers) + 1)):
        raise IngestError(f"{path}: class numbers must be 1..{len(numbers)}, each once, and names distinct")
    return {name: number - 1 for name, number in numbers.items()}


def _read_csv(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...]
) -> list[tuple[int, dict[str, str]]]:
    """Rows of a headed CSV as (line number, {column: stripped value}); absent optional columns read ''."""
    if not path.is_file():
        raise IngestError(f"CSV file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in required if name not in header]
        if missing:
            raise IngestError(f"{path}: header {header} lacks the columns {missing}")
        records = []
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                raise IngestError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields ({','.join(header)}), "
                    f"got {len(fields)}: {fields}"
                )
            values = dict(zip(header, (field.strip() for field in fields), strict=True))
            records.append((reader.line_num, {name: values.get(name, "") for name in (*required, *optional)}))
    return records


def _label_indices(records: list[tuple[int, dict[str, str]]]) -> dict[str, int]:
    """0-based index of every non-empty label of ``records``, in sorted order."""
    return {
        label: index for index, label in enumerate(sorted({r["label"] for _, r in records if r["label"]}))
    }


def _normalise_split(value: str, labelled: bool, path: Path, line_number: int) -> str:
    split_name = _SPLIT_ALIASES.get(value.lower(), value.lower())
    if not split_name:
        return "train" if labelled else "unlabelled"
    if split_name not in SPLITS:
        raise IngestError(f"{path}:{line_number}: split {value!r} is not one of {SPLITS}")
    if labelled == (split_name == "unlabelled"):
        raise IngestError(
            f"{path}:{line_number}: split {split_name!r} "
            + ("cannot carry a label" if labelled else "needs a label")
        )
    return split_name


def _key_path(path: Path, base: Path) -> str:
    """Posix path identifying ``path``: relative to ``base`` when inside it, else absolute without anchor."""
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(base.absolute()).as_posix()
    except ValueError:
        return path.relative_to(path.anchor).as_posix()


def _index_video_files(root: Path) -> dict[str, list[Path]]:
    """Video files under ``root`` grouped by name without extension (empty when ``root`` is absent)."""
    if not root.is_dir():
        logger.warning("video folder %s does not exist: every video will be recorded as missing", root)
        return {}
    files: dict[str, list[Path]] = defaultdict(list)
    for directory, _, names in os.walk(root):
        for name in names:
            stem, extension = os.path.splitext(name)
            if extension.lower() in VIDEO_EXTENSIONS:
                files[stem].append(Path(directory) / name)
    return files


def _pick_kinetics_file(candidates: list[Path], split_name: str, label: str | None) -> Path | None:
    """The candidate under ``<split>/<label>/`` if any (label with spaces or underscores), else the first."""
    if not candidates:
        return None
    folders = {(split_name, label), (split_name, (label or "").replace(" ", "_"))}
    preferred = [path for path in candidates if (path.parent.parent.name, path.parent.name) in folders]
    return sorted(preferred or candidates)[0]


def _parse_int(text: str, path: Path, line_number: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise IngestError(f"{path}:{line_number}: expected an integer, got {text!r}") from None


def _parse_seconds(text: str, path: Path, line_number: int) -> int:
    """Whole seconds of a Kinetics time field ("14" or "14.0")."""
    try:
        seconds = float(text)
    except ValueError:
        raise IngestError(f"{path}:{line_number}: expected a time in seconds, got {text!r}") from None
    if not seconds.is_integer() or seconds < 0:
        raise IngestError(f"{path}:{line_number}: expected whole non-negative seconds, got {text!r}")
    return int(seconds)


def _line_error(path: Path, line_number: int, expected: str, fields: list[str]) -> IngestError:
    return IngestError(f"{path}:{line_number}: expected {expected}, got {' '.join(fields)!r}")


def _required(config: DataConfig, field: str) -> Path:
    value = getattr(config, field)
    if value is None:
        fmt = config.target_format if field.startswith("target") else config.source_format
        raise IngestError(f"data config field {field} is required for format {fmt!r}")
    return Path(value)
