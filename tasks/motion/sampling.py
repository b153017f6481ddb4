"""Motion differential sampling (MSCL, Ni et al. 2022): train on the clips of a video that move the most.

Each clip key of a video is scored by the mean optical-flow magnitude over its frames, measured on the stored
TV-L1 flow (de-quantised with the bound each array was stored with); training then draws its clips
from the more dynamic half of each video's keys, where motion-sensitive learning has something to learn.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from motionfit.storage.layout import RunLayout
from motionfit.tasks.motion.codec import dequantize_flow, stored_flow_bound

logger = logging.getLogger(__name__)


def frame_motion(flow: np.ndarray, flow_bound: float) -> np.ndarray:
    """Mean flow magnitude (pixels) per frame: ``[T, H, W, 2] uint8`` flow stored with ``flow_bound`` ->
    ``[T] float32``."""
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be [T, H, W, 2] quantised flow, got shape {flow.shape}")
    vectors = dequantize_flow(flow, flow_bound)
    return np.sqrt((vectors**2).sum(axis=-1)).mean(axis=(1, 2))


def clip_motion_scores(
    layout: RunLayout,
    keys: pd.DataFrame,
    clip_length: int,
    frame_stride: int = 1,
) -> np.ndarray:
    """Motion score ``[N] float32`` of every key (``video_id, start_frame``): the mean flow magnitude over
    the clip's flow frames (every key's clip lies inside its video, see ``clip_keys``)."""
    store = layout.store("flow")
    scores = np.zeros(len(keys), dtype=np.float32)
    offsets = np.arange(clip_length) * frame_stride
    for video_id, rows in keys.groupby("video_id", sort=False).indices.items():
        motion = frame_motion(store.read(video_id), stored_flow_bound(store.attrs(video_id), video_id))
        frames = keys["start_frame"].to_numpy()[rows, None] + offsets[None, :]
        scores[rows] = motion[frames].mean(axis=1)
    return scores


def dynamic_half(keys: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """The keys whose score ranks in the top half of their video (``ceil(R / 2)`` of R clips; ties by
    clip order), in their original order."""
    if len(scores) != len(keys):
        raise ValueError(f"scores has {len(scores)} entries for {len(keys)} keys")
    ranks = (
        pd.Series(-np.asarray(scores, dtype=np.float64), index=keys.index)
        .groupby(keys["video_id"].to_numpy(), sort=False)
        .rank(method="first")
    )
    per_video = keys.groupby("video_id", sort=False)["video_id"].transform("size")
    return keys[ranks <= np.ceil(per_video / 2)]


def motion_differential_keys(
    layout: RunLayout,
    keys: pd.DataFrame,
    clip_length: int,
    frame_stride: int = 1,
) -> pd.DataFrame:
    """MSCL's motion differential sampling on ``keys``: the more dynamic half of every video's clips, with a
    ``motion`` column (mean flow magnitude of the clip)."""
    scores = clip_motion_scores(layout, keys, clip_length, frame_stride)
    kept = dynamic_half(keys.assign(motion=scores), scores)
    logger.info(
        "motion differential sampling keeps %d of %d clips (mean motion %.2f px vs %.2f px overall)",
        len(kept),
        len(keys),
        float(kept["motion"].mean()) if len(kept) else 0.0,
        float(scores.mean()) if len(scores) else 0.0,
    )
    return kept
