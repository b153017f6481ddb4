"""Clip keys, reading and augmentation of RGB and flow clips from tiny zarr stores (``helpers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FLOW_BOUND, quantise_flow, write_moving_squares

from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.clips import (
    ClipDataset,
    EpochSampler,
    clip_keys,
    clip_starts,
    fit_clip_keys,
    frame_counts,
    labelled_videos,
    make_loader,
    num_classes,
    unlabelled_videos,
    video_means,
)
from motionfit.tasks.data.transforms import KINETICS_MEAN, KINETICS_STD, ClipTransform, horizontal_flip
from motionfit.tasks.motion.codec import FLOW_MEAN, FLOW_STD


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunLayout, pd.DataFrame]:
    return write_moving_squares(tmp_path_factory.mktemp("run"), n_train=2, n_test=1, n_source=1, n_frames=20)


def test_clip_starts_are_evenly_spaced_distinct_and_inside_the_video() -> None:
    assert clip_starts(20, 8, 3).tolist() == [2, 6, 10]  # floor of 13/6, 39/6, 65/6: segment centres
    assert clip_starts(20, 8, 1).tolist() == [6]
    assert clip_starts(10, 8, 10).tolist() == [0, 1, 2]  # 3 admissible starts: each once, no duplicate clip
    assert clip_starts(5, 8, 2).tolist() == []  # shorter than a clip: no key rather than looped frames
    with pytest.raises(ValueError, match="clips_per_video"):
        clip_starts(20, 8, 0)


def test_refitted_keys_keep_their_starts_inside_the_video_and_drop_short_videos(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = pd.DataFrame(
        {
            "video_id": ["a", "a", "b"],
            "clip_index": [0, 1, 0],
            "start_frame": [1, 7, 0],
            "n_frames": [12, 12, 5],
        }
    )
    fitted = fit_clip_keys(keys, 8)
    assert fitted["video_id"].tolist() == ["a", "a"] and fitted["start_frame"].tolist() == [1, 4]
    assert "1 of 2 videos are shorter than a clip of 8 frames" in caplog.text
    assert keys["start_frame"].tolist() == [1, 7, 0], "the given keys are left as they were"


def test_clip_keys_are_stable_across_runs_and_modalities(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    video_ids = manifest["video_id"].tolist()
    rgb = clip_keys(frame_counts(layout, video_ids, ("rgb",)), span=8, clips_per_video=3)
    flow = clip_keys(frame_counts(layout, video_ids, ("flow",)), span=8, clips_per_video=3)
    again = clip_keys(frame_counts(RunLayout.at(layout.root), video_ids, ("rgb", "flow")), 8, 3)
    pd.testing.assert_frame_equal(rgb, flow)
    pd.testing.assert_frame_equal(rgb, again)
    assert len(rgb) == 3 * len(video_ids)
    assert rgb.groupby("video_id")["clip_index"].apply(list).map(lambda c: c == [0, 1, 2]).all()
    assert (rgb["n_frames"] == 19).all()  # 20 frames, 19 flow fields


def test_inference_clips_are_deterministic_and_aligned(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    keys = clip_keys(frame_counts(layout, manifest["video_id"].tolist(), ("rgb", "flow")), 8, 3)
    transform = ClipTransform(crop_size=16)
    dataset = ClipDataset(layout, keys, ("rgb", "flow"), 8, transform)
    first, second = dataset[4], ClipDataset(layout, keys, ("rgb", "flow"), 8, transform)[4]
    assert first["rgb"].shape == (3, 8, 16, 16) and first["rgb"].dtype == torch.float32
    assert first["flow"].shape == (2, 8, 16, 16)
    assert torch.equal(first["rgb"], second["rgb"]) and torch.equal(first["flow"], second["flow"])
    assert (first["clip_index"], first["start_frame"]) == (1, int(keys.loc[4, "start_frame"]))
    # aligned: the bright square (RGB) is where the flow is non-zero, in every frame of the clip
    moving = first["flow"].abs().amax(dim=0) > 0.05
    bright = first["rgb"].mean(dim=0) > 0.5
    assert (moving == bright).float().mean() > 0.9


def test_training_clips_depend_only_on_seed_epoch_and_index(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    keys = clip_keys(frame_counts(layout, manifest["video_id"].tolist(), ("rgb",)), 8, 2)
    transform = ClipTransform(crop_size=16, train=True, horizontal_flip=True)

    def dataset(seed: int) -> ClipDataset:
        return ClipDataset(layout, keys, ("rgb",), 8, transform, jitter_segments=2, seed=seed)

    assert torch.equal(dataset(0)[(3, 5)]["rgb"], dataset(0)[(3, 5)]["rgb"])
    assert not torch.equal(dataset(0)[(3, 5)]["rgb"], dataset(0)[(4, 5)]["rgb"])
    assert not torch.equal(dataset(0)[(3, 5)]["rgb"], dataset(1)[(3, 5)]["rgb"])
    starts = {dataset(0)[(epoch, 0)]["start_frame"] for epoch in range(30)}
    assert len(starts) > 1 and max(starts) <= 11  # jitter within the clip's half of the 12 admissible starts


def test_horizontal_flip_negates_flow_x_and_keeps_y() -> None:
    flow = torch.from_numpy(quantise_flow(np.broadcast_to([3.0, -2.0], (2, 4, 5, 2)).copy())).float()
    flow[:, 0, 0, 0] = float(quantise_flow(np.array([7.5, 0.0]))[0])  # a distinct top-left vector
    frames = flow.permute(0, 3, 1, 2)  # [T, 2, H, W]
    flipped = horizontal_flip(frames, "flow")
    pixels = flipped / 255 * 2 * FLOW_BOUND - FLOW_BOUND
    original = frames / 255 * 2 * FLOW_BOUND - FLOW_BOUND
    torch.testing.assert_close(pixels[:, 0], -original[:, 0].flip(-1))
    torch.testing.assert_close(pixels[:, 1], original[:, 1].flip(-1))
    assert pixels[0, 0, 0, -1].item() == pytest.approx(-7.5, abs=0.1)  # moved to the right edge, negated
    rgb = torch.arange(2 * 3 * 2 * 3, dtype=torch.float32).view(2, 3, 2, 3)
    assert torch.equal(horizontal_flip(rgb, "rgb"), rgb.flip(-1))


def test_dataset_flips_flow_of_some_clips_only_when_enabled(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    video_id = manifest.loc[manifest["label"] == "right", "video_id"].iloc[0]
    keys = clip_keys(frame_counts(layout, [video_id], ("flow",)), 8, 1)
    signs = {}
    for flip in (False, True):
        transform = ClipTransform(crop_size=32, train=True, horizontal_flip=flip, scales=(1.0,))
        dataset = ClipDataset(layout, keys, ("flow",), 8, transform)
        x_means = [dataset[(epoch, 0)]["flow"][0].mean().item() for epoch in range(12)]
        signs[flip] = {np.sign(round(m, 3)) for m in x_means}
    assert signs[False] == {1.0}  # the square moves right: positive x flow
    assert signs[True] == {1.0, -1.0}


def test_normalisation_matches_kinetics_and_mmaction2_conventions(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    layout.store("frames").write("v", np.full((9, 8, 8, 3), 200, np.uint8))
    layout.store("flow").write("v", np.full((8, 8, 8, 2), 200, np.uint8))
    keys = clip_keys(frame_counts(layout, ["v"], ("rgb", "flow")), 4, 1)
    item = ClipDataset(layout, keys, ("rgb", "flow"), 4, ClipTransform(crop_size=8, eval_crop_fraction=1.0))[
        0
    ]
    expected_rgb = (200 / 255 - torch.tensor(KINETICS_MEAN)) / torch.tensor(KINETICS_STD)
    torch.testing.assert_close(item["rgb"][:, 0, 0, 0], expected_rgb)
    assert torch.allclose(item["flow"], torch.tensor((200 - FLOW_MEAN) / FLOW_STD))


def test_strong_view_changes_pixels_identically_in_every_frame(tmp_path: Path) -> None:
    layout = RunLayout.at(tmp_path)
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 256, (1, 24, 24, 3), dtype=np.uint8), 9, axis=0)
    layout.store("frames").write("still", still)
    keys = clip_keys(frame_counts(layout, ["still"], ("rgb",)), 6, 1)
    transform = ClipTransform(crop_size=16, train=True, strong_view=True)
    dataset = ClipDataset(layout, keys, ("rgb",), 6, transform)
    for epoch in range(8):
        item = dataset[(epoch, 0)]
        strong, weak = item["rgb_strong"], item["rgb"]
        assert strong.shape == weak.shape == (3, 6, 16, 16)
        assert torch.equal(strong, strong[:, :1].expand_as(strong))  # a still video stays still
        assert torch.equal(weak, weak[:, :1].expand_as(weak))
    assert not torch.equal(dataset[(0, 0)]["rgb_strong"], dataset[(0, 0)]["rgb"])


def test_video_items_stack_their_clips(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    train = labelled_videos(manifest)
    keys = clip_keys(frame_counts(layout, train["video_id"].tolist(), ("flow",)), 8, 3)
    labels = dict(zip(train["video_id"], train["label_index"], strict=True))
    dataset = ClipDataset(
        layout,
        keys,
        ("flow",),
        8,
        ClipTransform(crop_size=16),
        by_video=True,
        clips_per_item=3,
        labels=labels,
    )
    item = dataset[1]
    assert len(dataset) == len(train)
    assert item["flow"].shape == (3, 2, 8, 16, 16)
    assert item["clip_index"].tolist() == [0, 1, 2]
    assert item["label"] == train.loc[1, "label_index"]


def test_epoch_sampler_is_a_seeded_permutation_per_epoch() -> None:
    sampler = EpochSampler(10, seed=3)
    first = list(sampler)
    assert sorted(i for _, i in first) == list(range(10)) and {e for e, _ in first} == {0}
    assert list(EpochSampler(10, seed=3)) == first
    sampler.set_epoch(1)
    assert [i for _, i in sampler] != [i for _, i in first]
    longer = list(EpochSampler(4, seed=0, num_samples=10))
    assert len(longer) == 10 and sorted(i for _, i in longer[:8]) == sorted(list(range(4)) * 2)
    assert [i for _, i in EpochSampler(5, shuffle=False)] == list(range(5))


def test_loader_batches_do_not_depend_on_worker_processes(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    keys = clip_keys(frame_counts(layout, manifest["video_id"].tolist(), ("rgb",)), 8, 2)
    dataset = ClipDataset(
        layout, keys, ("rgb",), 8, ClipTransform(crop_size=16, train=True), jitter_segments=2, seed=5
    )
    batches = {}
    for workers in (0, 2):
        sampler = EpochSampler(len(dataset), seed=5)
        loader = make_loader(dataset, 4, sampler, torch.device("cpu"), num_workers=workers, seed=5)
        sampler.set_epoch(2)
        batches[workers] = [b["rgb"] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2], strict=True))


def test_manifest_helpers_and_errors(run: tuple[RunLayout, pd.DataFrame]) -> None:
    layout, manifest = run
    assert num_classes(manifest) == 4
    assert len(labelled_videos(manifest, "train")) == 8 and len(labelled_videos(manifest, "test")) == 4
    assert unlabelled_videos(manifest) == manifest.loc[manifest["dataset"] == "source", "video_id"].tolist()
    keys = clip_keys(frame_counts(layout, ["target_train_left_0"], ("rgb",)), 8, 1)
    with pytest.raises(ValueError, match="unknown modality 'depth'"):
        ClipDataset(layout, keys, ("depth",), 8, ClipTransform())
    with pytest.raises(ValueError, match="n_frames"):
        ClipDataset(layout, keys.drop(columns="n_frames"), ("rgb",), 8, ClipTransform())
    assert frame_counts(layout, ["target_train_left_0", "missing"], ("rgb",)) == {"target_train_left_0": 19}


def test_video_means_averages_clip_rows_in_order_of_first_appearance():
    ids, means = video_means(np.array([[1.0, 0.0], [2.0, 4.0], [3.0, 2.0]]), ["b", "a", "b"])
    assert ids == ["b", "a"]
    np.testing.assert_allclose(means, [[2.0, 1.0], [2.0, 4.0]])
    with pytest.raises(ValueError, match="one id per clip row"):
        video_means(np.zeros((3, 2)), ["a", "b"])


def test_every_clip_is_clip_length_real_frames_and_keys_of_a_video_are_distinct(tmp_path: Path) -> None:
    """A 16-frame clip of a 16-frame video used to loop (frames 0-14, then frame 0 again) and every one of R
    keys was that same clip; now a video yields its distinct clips of real frames, or none."""
    layout, _ = write_moving_squares(
        tmp_path, n_train=1, n_test=0, n_source=0, n_frames=32, directions=("left",)
    )
    short, _ = write_moving_squares(tmp_path / "short", n_train=1, n_test=0, n_source=0, n_frames=16)
    keys = clip_keys(frame_counts(layout, ["target_train_left_0"], ("rgb", "flow")), 16, 4)
    assert keys["start_frame"].tolist() == [2, 6, 10, 14] and keys["clip_index"].tolist() == [0, 1, 2, 3]
    dataset = ClipDataset(layout, keys, ("rgb",), 16, ClipTransform(crop_size=16))
    assert [dataset[i]["start_frame"] for i in range(4)] == [2, 6, 10, 14]
    assert not torch.equal(dataset[1]["rgb"], dataset[0]["rgb"])
    assert clip_keys(frame_counts(short, ["target_train_up_0"], ("rgb",)), 16, 4).empty
    looping = keys.assign(n_frames=15)
    with pytest.raises(ValueError, match="clips never loop"):
        ClipDataset(layout, looping, ("rgb",), 16, ClipTransform(crop_size=16))
