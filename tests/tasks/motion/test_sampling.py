"""MSCL's motion differential sampling on stored flow, read with the bound each array was stored with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import FLOW_BOUND, quantise_flow

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import clip_keys, frame_counts
from motionfit.tasks.motion.codec import quantize_flow
from motionfit.tasks.motion.sampling import (
    clip_motion_scores,
    dynamic_half,
    frame_motion,
    motion_differential_keys,
)


def test_motion_scores_pick_the_dynamic_half(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    speeds = np.array([0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1], dtype=np.float64)  # pixels per frame
    flow = np.zeros((12, 8, 8, 2))
    flow[..., 0] = speeds[:, None, None]
    layout.store("flow").write("v", quantise_flow(flow), attrs={"flow_bound": FLOW_BOUND})
    layout.store("frames").write("v", np.zeros((13, 8, 8, 3), np.uint8))
    np.testing.assert_allclose(
        frame_motion(quantise_flow(flow), FLOW_BOUND), speeds, atol=0.15
    )  # q=128 is 0.08 px
    keys = clip_keys(frame_counts(layout, ["v"], ("flow",)), 4, 3)
    assert keys["start_frame"].tolist() == [1, 4, 7]
    scores = clip_motion_scores(layout, keys, clip_length=4)
    np.testing.assert_allclose(scores, [1.0, 4.0, 1.75], atol=0.15)
    kept = motion_differential_keys(layout, keys, clip_length=4)
    assert kept["clip_index"].tolist() == [1, 2]  # the ceil(3 / 2) fastest clips, in clip order
    assert dynamic_half(keys, np.array([0.0, 1.0, 2.0]))["clip_index"].tolist() == [1, 2]


def test_motion_scores_read_each_arrays_own_bound(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    flow = np.zeros((6, 8, 8, 2), np.float32)
    flow[..., 0] = 3.0
    for video_id, bound in (("bound20", 20.0), ("bound5", 5.0)):
        layout.store("flow").write(video_id, quantize_flow(flow, bound), attrs={"flow_bound": bound})
    keys = clip_keys(frame_counts(layout, ["bound20", "bound5"], ("flow",)), 4, 1)
    np.testing.assert_allclose(clip_motion_scores(layout, keys, clip_length=4), [3.0, 3.0], atol=0.15)
    layout.store("flow").write("unbounded", quantize_flow(flow, 20.0))
    with pytest.raises(KeyError, match="'unbounded' has no 'flow_bound'"):
        clip_motion_scores(layout, clip_keys({"unbounded": 6}, 4, 1), clip_length=4)
