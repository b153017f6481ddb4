"""Clips of RGB frames and optical flow read from the run's zarr stores, for training and inference.

Every video is cut into a constant number R of clips with evenly spaced start frames, so a clip has a stable
key ``(video_id, clip_index, start_frame)``: the same for every run, for RGB and for flow (both count frames
on the flow's time axis, ``T - 1`` for a video of T frames, so an RGB clip and a flow clip with one key cover
the same frames). Training draws its clips around those starts (temporal jitter) and augments all frames of a
clip identically (:mod:`motionfit.tasks.data.transforms`; the flip is off by default, since it turns "move
left" into "move right"). Inference takes a centre crop.

All randomness of an item is drawn from ``numpy.random.default_rng([seed, epoch, index])``: the sampler
(:class:`EpochSampler`) hands the dataset ``(epoch, index)`` pairs, so the clips of an epoch do not depend on
worker processes, their number, or on whether training was interrupted.

Outputs are ``[C, T, H, W] float32``, normalised for the network (RGB with the Kinetics statistics, flow as
mmaction2 does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from motionfit.storage.arrays import VideoArrayStore
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.transforms import (
    ClipTransform,
    centre_box,
    crop_resize,
    horizontal_flip,
    multi_scale_box,
    normalise,
    randaugment_clip,
)

logger = logging.getLogger(__name__)

MODALITY_STORES = {"rgb": "frames", "flow": "flow"}
MODALITY_CHANNELS = {"rgb": 3, "flow": 2}

CLIP_KEY_COLUMNS = ["video_id", "clip_index", "start_frame"]


def clip_span(clip_length: int, frame_stride: int = 1) -> int:
    """Frames covered by a clip of ``clip_length`` frames taken every ``frame_stride`` frames."""
    if clip_length < 1 or frame_stride < 1:
        raise ValueError(f"clip_length and frame_stride must be >= 1, got {clip_length} and {frame_stride}")
    return (clip_length - 1) * frame_stride + 1


def clip_starts(n_frames: int, span: int, clips_per_video: int) -> np.ndarray:
    """Distinct start frames ``[r] int64`` (r <= R) of R clips of ``span`` frames, evenly spaced in a video of
    ``n_frames`` frames.

    The admissible starts ``0 .. n_frames - span`` are cut into R equal segments and each clip starts at the
    centre of its segment (R = 1: the centre clip); a video with fewer admissible starts than R gets each of
    them once, so no two keys of a video are the same clip. A video shorter than a clip has none.
    """
    if clips_per_video < 1:
        raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
    n_starts = n_frames - span + 1
    if n_starts < 1:
        return np.zeros(0, np.int64)
    starts = np.floor((np.arange(clips_per_video) + 0.5) * n_starts / clips_per_video).astype(np.int64)
    return np.unique(starts)


def _log_short(short: Sequence[str], n_videos: int, span: int) -> None:
    if short:
        logger.warning(
            "%d of %d videos are shorter than a clip of %d frames and are left out (first: %s)",
            len(short),
            n_videos,
            span,
            short[0],
        )


def clip_keys(frame_counts: Mapping[str, int], span: int, clips_per_video: int) -> pd.DataFrame:
    """The stable clip keys of ``frame_counts`` (``{video_id: frames on the flow axis}``).

    Returns a table with columns ``video_id, clip_index, start_frame`` (up to R rows per video, videos in
    the order given, ``clip_index`` 0, 1, ...) plus ``n_frames``. Every clip lies inside its video: a video
    shorter than ``span`` frames gets no key (and is logged).
    """
    video_ids = list(frame_counts)
    starts = [clip_starts(frame_counts[v], span, clips_per_video) for v in video_ids]
    _log_short([v for v, s in zip(video_ids, starts, strict=True) if not len(s)], len(video_ids), span)
    sizes = np.array([len(s) for s in starts], dtype=np.int64)
    first_row = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return pd.DataFrame(
        {
            "video_id": np.repeat(np.asarray(video_ids, dtype=object), sizes),
            "clip_index": np.arange(sizes.sum(), dtype=np.int64) - first_row,
            "start_frame": np.concatenate(starts) if starts else np.zeros(0, np.int64),
            "n_frames": np.repeat([frame_counts[v] for v in video_ids], sizes).astype(np.int64),
        }
    )


def fit_clip_keys(keys: pd.DataFrame, span: int) -> pd.DataFrame:
    """``keys`` made by another reader (a teacher's pseudo-labelled clips) refitted to clips of ``span``
    frames: each clip keeps its start unless it would reach past its video's end, where it moves back to end
    on the last frame, so a clip at least as long as the original still covers all of it (a shorter one
    covers its first frames). Rows of videos shorter than ``span`` frames are dropped (and logged)."""
    short = keys["n_frames"] < span
    _log_short(keys.loc[short, "video_id"].unique().tolist(), keys["video_id"].nunique(), span)
    fitted = keys[~short].copy()
    fitted["start_frame"] = np.minimum(fitted["start_frame"], fitted["n_frames"] - span).astype(np.int64)
    return fitted


def frame_counts(layout: RunLayout, video_ids: Sequence[str], modalities: Sequence[str]) -> dict[str, int]:
    """Frames of each video on the flow's time axis (RGB: T - 1; flow: its length), the minimum over
    ``modalities``; videos not committed in every modality's store are left out (and logged)."""
    stores = [_store(layout, m) for m in modalities]
    committed = set.intersection(*(s.committed_ids() for s in stores))
    missing = [v for v in video_ids if v not in committed]
    if missing:
        logger.warning(
            "%d of %d videos are not committed in %s and are left out (first: %s)",
            len(missing),
            len(video_ids),
            "/".join(MODALITY_STORES[m] for m in modalities),
            missing[0],
        )
    counts = {}
    for video_id in video_ids:
        if video_id in committed:
            lengths = [s.shape(video_id)[0] - (m == "rgb") for s, m in zip(stores, modalities, strict=True)]
            counts[video_id] = max(min(lengths), 1)
    return counts


def video_means(clip_values: Any, clip_video_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The clip-to-video aggregation of every stage: clip rows averaged per video (softmax scores of the test
    clips, logits of pseudo-labelled clips, features of retrieval clips).

    ``clip_values`` ``[N, ...]`` float; ``clip_video_ids`` ``[N]``. Returns the video ids in order of first
    appearance and ``[V, ...]`` float64 means in that order.
    """
    clip_values = np.asarray(clip_values, dtype=np.float64)
    ids = np.asarray(clip_video_ids)
    if ids.ndim != 1 or ids.shape[0] != clip_values.shape[0]:
        raise ValueError(
            f"clip_video_ids has shape {ids.shape}; expected [{clip_values.shape[0]}] (one id per clip row)"
        )
    unique, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    video_index = rank[inverse]
    flat = clip_values.reshape(clip_values.shape[0], -1)
    sums = np.zeros((unique.size, flat.shape[1]))
    np.add.at(sums, video_index, flat)
    counts = np.bincount(video_index, minlength=unique.size)[:, None]
    means = (sums / counts).reshape((unique.size, *clip_values.shape[1:]))
    return [str(v) for v in unique[order]], means


def labelled_videos(manifest: pd.DataFrame, split: str = "train") -> pd.DataFrame:
    """The target's labelled videos of ``split``: ``video_id, label_index`` (label_index >= 0)."""
    rows = manifest[
        (manifest["dataset"] == "target") & (manifest["split"] == split) & (manifest["label_index"] >= 0)
    ]
    return rows[["video_id", "label_index"]].reset_index(drop=True)


def unlabelled_videos(manifest: pd.DataFrame) -> list[str]:
    """The unlabelled pool (D_source): the manifest's ``in_source`` rows (see ``build_manifest``); a manifest
    from before that column has every source video plus the target's ``unlabelled`` split."""
    if "in_source" in manifest:
        rows = manifest[manifest["in_source"].astype(bool)]
    else:
        rows = manifest[(manifest["dataset"] == "source") | (manifest["split"] == "unlabelled")]
    return rows["video_id"].tolist()


def num_classes(manifest: pd.DataFrame) -> int:
    """Number of target classes (``max(label_index) + 1`` over the target's rows)."""
    labels = manifest.loc[manifest["dataset"] == "target", "label_index"]
    if labels.empty or labels.max() < 0:
        raise ValueError("manifest has no labelled target videos: cannot tell the number of classes")
    return int(labels.max()) + 1


def _store(layout: RunLayout, modality: str) -> VideoArrayStore:
    if modality not in MODALITY_STORES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(MODALITY_STORES)}")
    return layout.store(MODALITY_STORES[modality])


class ClipDataset(Dataset):
    """Clips of the keys in ``keys`` (columns ``video_id, clip_index, start_frame, n_frames``).

    Items are clips (``by_video=False``: one per key row) or videos (``by_video=True``: the unique video ids
    in order of first appearance; each item takes ``clips_per_item`` of the video's keys: all in order when
    it has that many, otherwise a random choice in training, evenly spread ones in inference).

    Args:
        layout: the run whose ``frames``/``flow`` stores are read.
        keys: the clip keys (see :func:`clip_keys`); the training clip starts jitter around them.
        modalities: ``("rgb",)``, ``("flow",)`` or ``("rgb", "flow")`` (aligned: same frames, same crop).
        clip_length, frame_stride: frames per clip and the step between them.
        transform: spatial processing (crop, flip, strong view).
        jitter_segments: training clips start uniformly within half a segment of their key's start, the
            admissible starts being cut into this many segments (the clips per video the keys were made
            with: a clip then stays in its own segment); 0 keeps the keys' starts exactly.
        labels: ``{video_id: label_index}``; videos without one get -1.
        seed: the run's seed; item randomness is drawn from ``(seed, epoch, index)``.

    An item is a dict: one ``[C, T, H, W] float32`` tensor per modality (``[R, C, T, H, W]`` for video
    items, R = ``clips_per_item``), ``rgb_strong`` with the strong view, and ``label``, ``index`` (the
    item's position, e.g. a memory-bank row), ``clip_index`` and ``start_frame`` (the clip's actual start;
    ``[R]`` tensors for video items).
    """

    def __init__(
        self,
        layout: RunLayout,
        keys: pd.DataFrame,
        modalities: Sequence[str],
        clip_length: int,
        transform: ClipTransform,
        *,
        frame_stride: int = 1,
        by_video: bool = False,
        clips_per_item: int = 1,
        jitter_segments: int = 0,
        labels: Mapping[str, int] | None = None,
        seed: int = 0,
    ) -> None:
        missing = {*CLIP_KEY_COLUMNS, "n_frames"} - set(keys.columns)
        if missing:
            raise ValueError(f"keys lacks columns {sorted(missing)}; build it with clip_keys()")
        for modality in modalities:
            if modality not in MODALITY_STORES:
                raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(MODALITY_STORES)}")
        if transform.strong_view and "rgb" not in modalities:
            raise ValueError("a strong view needs the rgb modality")
        span = clip_span(clip_length, frame_stride)
        outside = keys[keys["start_frame"] + span > keys["n_frames"]]
        if len(outside):
            row = outside.iloc[0]
            raise ValueError(
                f"{len(outside)} clip keys reach past their video's end (first: {row['video_id']!r} starts "
                f"at {row['start_frame']} of {row['n_frames']} frames, clip of {span}): clips never loop"
            )
        self.root = layout.root
        self.keys = keys.reset_index(drop=True)
        self.modalities = tuple(modalities)
        self.clip_length = clip_length
        self.frame_stride = frame_stride
        self.transform = transform
        self.by_video = by_video
        self.clips_per_item = clips_per_item
        self.jitter_segments = jitter_segments
        self.seed = seed
        video_ids = self.keys["video_id"].to_numpy()
        self._clip_index = self.keys["clip_index"].to_numpy(dtype=np.int64)
        self._start_frame = self.keys["start_frame"].to_numpy(dtype=np.int64)
        self._n_frames = self.keys["n_frames"].to_numpy(dtype=np.int64)
        self._video_of_row = video_ids
        self.video_ids = list(dict.fromkeys(video_ids))
        self.labels = np.array([(labels or {}).get(v, -1) for v in video_ids], dtype=np.int64)
        if by_video:
            rows = self.keys.groupby("video_id", sort=False).indices
            self.video_rows = [np.asarray(rows[v]) for v in self.video_ids]
        self._stores: dict[str, VideoArrayStore] | None = None

    def __len__(self) -> int:
        return len(self.video_ids) if self.by_video else len(self.keys)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stores": None}  # each worker opens its own zarr handles

    @property
    def stores(self) -> dict[str, VideoArrayStore]:
        if self._stores is None:
            layout = RunLayout.at(self.root)
            self._stores = {m: _store(layout, m) for m in self.modalities}
        return self._stores

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        rows = self._item_rows(index, rng)
        clips = [self._clip(int(row), rng) for row in rows]
        if self.by_video:
            item = {name: _stack([c[name] for c in clips]) for name in clips[0]}
        else:
            item = clips[0]
        item["label"] = int(self.labels[rows[0]])
        item["index"] = index
        return item

    def _item_rows(self, index: int, rng: np.random.Generator) -> np.ndarray:
        if not self.by_video:
            return np.array([index])
        rows = self.video_rows[index]
        if len(rows) == self.clips_per_item:
            return rows
        if self.transform.train and len(rows) > self.clips_per_item:
            return np.sort(rng.choice(rows, size=self.clips_per_item, replace=False))
        return rows[
            np.floor((np.arange(self.clips_per_item) + 0.5) * len(rows) / self.clips_per_item).astype(int)
        ]

    def _clip(self, row: int, rng: np.random.Generator) -> dict[str, Any]:
        video_id, clip_index = self._video_of_row[row], int(self._clip_index[row])
        start, n_frames = int(self._start_frame[row]), int(self._n_frames[row])
        span = clip_span(self.clip_length, self.frame_stride)
        if self.transform.train and self.jitter_segments > 0:
            n_starts = max(n_frames - span + 1, 1)
            jitter = n_starts // (2 * self.jitter_segments)
            start = int(np.clip(start + rng.integers(-jitter, jitter + 1), 0, n_starts - 1))
        indices = start + np.arange(self.clip_length) * self.frame_stride
        raw = {m: self._read(m, video_id, indices) for m in self.modalities}
        clip: dict[str, Any] = {}
        height, width = next(iter(raw.values())).shape[-2:]
        box, flip = self._spatial_params(height, width, rng)
        for modality, frames in raw.items():
            frames = crop_resize(frames, box, self.transform.crop_size)
            clip[modality] = normalise(horizontal_flip(frames, modality) if flip else frames, modality)
        if self.transform.strong_view:
            box, flip = self._spatial_params(height, width, rng)
            frames = crop_resize(raw["rgb"], box, self.transform.crop_size)
            frames = horizontal_flip(frames, "rgb") if flip else frames
            strong = randaugment_clip(
                frames.round().clamp(0, 255).to(torch.uint8),
                rng,
                self.transform.randaugment_ops,
                self.transform.randaugment_magnitude,
                self.transform.cutout_fraction,
            )
            clip["rgb_strong"] = normalise(strong.float(), "rgb")
        clip["clip_index"] = clip_index
        clip["start_frame"] = start
        return clip

    def _spatial_params(self, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        if not self.transform.train:
            return centre_box(height, width, self.transform.eval_crop_fraction), False
        box = multi_scale_box(height, width, self.transform.scales, rng)
        return box, bool(self.transform.horizontal_flip and rng.random() < 0.5)

    def _read(self, modality: str, video_id: str, indices: np.ndarray) -> torch.Tensor:
        """Frames ``indices`` of ``video_id`` as raw ``[T, C, H, W] float32``."""
        first, last = int(indices.min()), int(indices.max())
        block = self.stores[modality].read_range(video_id, first, last + 1)
        return torch.from_numpy(np.ascontiguousarray(block[indices - first])).permute(0, 3, 1, 2).float()


def _stack(values: list[Any]) -> torch.Tensor:
    return torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` pairs: a permutation of ``range(n_items)`` drawn from ``(seed, epoch)``
    (or the identity order when ``shuffle`` is False), repeated with fresh permutations until
    ``num_samples`` (default ``n_items``) pairs. Call :meth:`set_epoch` before each epoch; the sampler lives
    in the main process, so persistent workers see the new epoch through the pairs."""

    def __init__(
        self, n_items: int, seed: int = 0, shuffle: bool = True, num_samples: int | None = None
    ) -> None:
        if n_items < 1:
            raise ValueError(f"EpochSampler needs at least one item, got n_items={n_items}")
        self.n_items = n_items
        self.seed = seed
        self.shuffle = shuffle
        self.num_samples = n_items if num_samples is None else num_samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        n_rounds = -(-self.num_samples // self.n_items)
        orders = []
        for round_index in range(n_rounds):
            if self.shuffle:
                generator = torch.Generator().manual_seed(hash_seed(self.seed, self.epoch, round_index))
                orders.append(torch.randperm(self.n_items, generator=generator))
            else:
                orders.append(torch.arange(self.n_items))
        order = torch.cat(orders)[: self.num_samples].tolist()
        return iter([(self.epoch, index) for index in order])


def hash_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (e.g. ``(seed, epoch)``) through numpy's SeedSequence."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1)
    )


class RankBatchSampler(Sampler):
    """Batches of ``batch_size`` of ``sampler``'s pairs (the last partial batch dropped with ``drop_last``),
    of which rank ``rank`` of ``world_size`` yields its contiguous share: items ``[r*b/W, (r+1)*b/W)`` of
    every batch of b items. The ranks together see exactly the batches of one process, in its order."""

    def __init__(
        self, sampler: EpochSampler, batch_size: int, drop_last: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        self.batches = BatchSampler(sampler, batch_size, drop_last)
        last = 0 if drop_last else len(sampler) % batch_size
        if batch_size % world_size or last % world_size:
            raise ValueError(
                f"batches of {batch_size} items{f' (the last of {last})' if last else ''} cannot be split "
                f"evenly across {world_size} training processes: batch_size (and the size of a data set "
                "smaller than one batch) must be a multiple of the number of processes"
            )
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            share = len(batch) // self.world_size
            yield batch[self.rank * share : (self.rank + 1) * share]


def _init_worker(worker_id: int) -> None:
    """One intra-op thread per loader worker (workers run in parallel with the training process)."""
    torch.set_num_threads(1)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: EpochSampler,
    device: torch.device,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over ``dataset`` in ``sampler``'s order: ``num_workers`` persistent workers (one thread
    each), pinned memory on CUDA; rank ``rank`` of ``world_size`` loads its share of each batch (see
    :class:`RankBatchSampler`). The loader has its own generator seeded from ``seed``: the workers' python,
    numpy and torch generators are seeded from it, and creating an iterator never consumes the global torch
    RNG (which exact resumption restores). Items draw their augmentation from ``(seed, epoch, index)``."""
    return DataLoader(
        dataset,
        batch_sampler=RankBatchSampler(sampler, batch_size, drop_last, rank, world_size),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        worker_init_fn=_init_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


@dataclass
class ClipLoader:
    """A clip data set with its sampler and DataLoader; iterate it for batches, call :meth:`set_epoch` before
    each training epoch."""

    dataset: ClipDataset
    sampler: EpochSampler
    loader: DataLoader

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)


def _process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the ``torch.distributed`` process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def clip_loader(
    dataset: ClipDataset,
    batch_size: int,
    device: torch.device,
    *,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    num_samples: int | None = None,
) -> ClipLoader:
    """The loader of every training and inference stage: ``dataset`` in the order of an :class:`EpochSampler`
    seeded with ``seed`` (shuffled per epoch, or in order), batches of ``batch_size``. A shuffled (training)
    loader drops its last partial batch when the data set holds more than one batch and, when several
    processes train together (a ``torch.distributed`` process group), yields this rank's share of each batch;
    an inference loader yields every item on every rank."""
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle, num_samples=num_samples)
    drop_last = shuffle and len(dataset) > batch_size
    rank, world_size = _process_group() if shuffle else (0, 1)
    loader = make_loader(
        dataset, batch_size, sampler, device, num_workers, drop_last, seed, rank=rank, world_size=world_size
    )
    return ClipLoader(dataset, sampler, loader)


def video_clip_keys(
    layout: RunLayout,
    video_ids: Sequence[str],
    modalities: Sequence[str],
    clip_length: int,
    clips_per_video: int,
    frame_stride: int = 1,
) -> pd.DataFrame:
    """The clip keys of ``video_ids`` readable in every one of ``modalities``: ``clips_per_video`` evenly
    spaced clips of ``clip_length`` frames each (see :func:`clip_keys`)."""
    counts = frame_counts(layout, list(video_ids), modalities)
    return clip_keys(counts, clip_span(clip_length, frame_stride), clips_per_video)
