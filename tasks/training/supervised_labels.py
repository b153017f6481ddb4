"""The supervised upper bound's targets: the source's held-back true labels in the pseudo-label table format.

The IDT-prior paper reports every method as a percentage of supervised pre-training on the source ("% sup.").
Where the source has held-back labels (the synthetic set, or a labelled Kinetics CSV), the same student
training reads this table instead of the teacher's pseudo-labels: one-hot logits, used as hard targets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import write_table
from motionfit.tasks.data.clips import CLIP_KEY_COLUMNS, unlabelled_videos, video_clip_keys

ONE_HOT_LOGIT = 20.0
"""Logit of the true class (others 0): softmax puts > 0.99999 on it, argmax is the label."""


def supervised_label_table(
    layout: RunLayout, manifest: pd.DataFrame, clips_per_video: int, clip_length: int, frame_stride: int = 1
) -> pd.DataFrame:
    """Clip keys of every video of the unlabelled pool (the students' source) whose held-back label is a
    target class, with one-hot logits.

    Returns ``video_id, clip_index, start_frame, logits`` (list<float32> over the target's classes, in
    label_index order); raises ValueError when no such video has a usable held-back label.
    """
    target = manifest[(manifest["dataset"] == "target") & (manifest["label_index"] >= 0)]
    class_index = dict(zip(target["label"], target["label_index"], strict=True))
    n_classes = int(target["label_index"].max()) + 1
    pool = manifest["video_id"].isin(unlabelled_videos(manifest))
    source = manifest[pool & manifest["heldout_label"].isin(class_index)]
    if source.empty:
        raise ValueError(
            "no source video has a held-back label among the target classes: no supervised bound"
        )
    keys = video_clip_keys(layout, source["video_id"], ("rgb",), clip_length, clips_per_video, frame_stride)
    labels = keys["video_id"].map(dict(zip(source["video_id"], source["heldout_label"], strict=True)))
    logits = np.zeros((len(keys), n_classes), np.float32)
    logits[np.arange(len(keys)), labels.map(class_index).to_numpy(dtype=np.int64)] = ONE_HOT_LOGIT
    return keys[CLIP_KEY_COLUMNS].assign(logits=list(logits))


def write_supervised_labels(
    layout: RunLayout, manifest: pd.DataFrame, clips_per_video: int, clip_length: int, frame_stride: int = 1
) -> str:
    """Write :func:`supervised_label_table` to ``<run>/supervised_labels.parquet``; returns its URL."""
    url = layout.supervised_labels
    write_table(url, supervised_label_table(layout, manifest, clips_per_video, clip_length, frame_stride))
    return url
