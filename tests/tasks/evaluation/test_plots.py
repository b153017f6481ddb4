import io
import struct

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.tasks.evaluation import plots
from motionfit.tasks.evaluation.gradcam import grad_cam, overlay_heatmap

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}


def png_size(path: str) -> tuple[int, int]:
    """Width and height from a PNG file's IHDR chunk (checking the signature)."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def read_rgb(path: str) -> np.ndarray:
    with open(path, "rb") as handle:
        image = matplotlib.image.imread(io.BytesIO(handle.read()), format="png")
    return np.rint(image[..., :3] * 255).astype(np.uint8)


def count_colour(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(image == np.array(colour, dtype=np.uint8), axis=-1).sum())


@pytest.fixture()
def frames_store(tmp_path):
    """A frames store holding one solid-colour video (8 frames of 24x32) per colour name."""
    store = RunLayout.at(tmp_path).store("frames")
    for name, colour in COLOURS.items():
        store.write(name, np.broadcast_to(np.array(colour, dtype=np.uint8), (8, 24, 32, 3)))
    return store


def test_evenly_spaced_and_frame_strip():
    np.testing.assert_array_equal(plots.evenly_spaced(5, 3), [0, 2, 4])
    np.testing.assert_array_equal(plots.evenly_spaced(2, 4), [0, 1])
    frames = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((5, 2, 3, 3), dtype=np.uint8)
    strip = plots.frame_strip(frames, n_frames=3)
    assert strip.shape == (2, 9, 3)
    np.testing.assert_array_equal(strip[0, ::3, 0], [0, 2, 4])


def test_stored_frame_strip_matches_the_strip_of_the_whole_video(tmp_path):
    store = RunLayout.at(tmp_path).store("frames")
    video = np.random.default_rng(0).integers(0, 256, size=(20, 6, 8, 3), dtype=np.uint8)
    store.write("v", video)
    np.testing.assert_array_equal(plots.stored_frame_strip(store, "v", 4), plots.frame_strip(video, 4))


def test_training_curves_png(tmp_path):
    histories = {
        "teacher": pd.DataFrame(
            {"epoch": [1, 2, 3], "loss": [2.0, 1.2, 0.8], "accuracy": [30.0, 60.0, 80.0]}
        ),
        "student": pd.DataFrame({"epoch": [1, 2], "loss": [1.5, 1.0], "val_accuracy": [40.0, 55.0]}),
    }
    path = plots.plot_training_curves(histories, str(tmp_path / "plots" / "curves.png"))
    assert png_size(path) == (1000, 400)
    with pytest.raises(ValueError, match="expected 'epoch'"):
        plots.plot_training_curves({"teacher": pd.DataFrame({"loss": [1.0]})}, str(tmp_path / "x.png"))


def test_confusion_matrix_png_grows_with_the_class_count(tmp_path):
    small = plots.plot_confusion_matrix(np.eye(3) * 4, ["a", "b", "c"], str(tmp_path / "c3.png"))
    large = plots.plot_confusion_matrix(
        np.eye(20), [f"class {i}" for i in range(20)], str(tmp_path / "c20.png")
    )
    assert png_size(small) == (500, 500)
    assert png_size(large) == (800, 800)
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        plots.plot_confusion_matrix(np.eye(3), ["a", "b"], str(tmp_path / "bad.png"))


def test_retrieval_examples_show_the_stored_frames(tmp_path, frames_store):
    labels = {"red": "run", "green": "run", "blue": "jump", "yellow": "jump"}
    path = plots.plot_retrieval_examples(
        frames_store,
        ["red", "blue"],
        [["green", "blue", "yellow"], ["yellow", "red"]],
        str(tmp_path / "plots" / "retrieval.png"),
        labels=labels,
    )
    assert png_size(path) == (4 * 320, 2 * 110)
    image = read_rgb(path)
    for colour in COLOURS.values():
        assert count_colour(image, colour) > 500  # each video's frames are drawn


def test_cluster_examples_pick_the_largest_clusters(tmp_path, frames_store):
    clusters = pd.DataFrame({"video_id": ["red", "green", "blue", "yellow"], "cluster": [7, 7, 3, 5]})
    path = plots.plot_cluster_examples(
        frames_store, clusters, str(tmp_path / "clusters.png"), n_clusters=2, videos_per_cluster=2
    )
    assert png_size(path) == (640, 220)
    image = read_rgb(path)
    assert count_colour(image, COLOURS["red"]) > 500 and count_colour(image, COLOURS["green"]) > 500
    assert count_colour(image, COLOURS["blue"]) > 500  # cluster 3 wins the tie with cluster 5 by its id
    assert count_colour(image, COLOURS["yellow"]) == 0
    with pytest.raises(ValueError, match="lacks columns"):
        plots.plot_cluster_examples(frames_store, clusters[["video_id"]], str(tmp_path / "bad.png"))


class ChannelEvidenceNet(nn.Module):
    """Feature map = the input clip itself; logits = fc(global average of the feature map)."""

    def __init__(self, fc_weight: torch.Tensor) -> None:
        super().__init__()
        self.backbone = nn.Identity()
        self.fc = nn.Linear(fc_weight.shape[1], fc_weight.shape[0], bias=False)
        self.fc.weight.data.copy_(fc_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x).mean(dim=(2, 3, 4)))


def test_grad_cam_localises_the_channel_that_carries_the_class_evidence():
    # Class 0 reads channel 0, class 1 reads channel 1. Channel 0 holds a blob in the top-left corner of the
    # last two frames, channel 1 a blob in the bottom-right corner of the first two.
    model = ChannelEvidenceNet(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    clip = torch.zeros(1, 2, 4, 8, 8)
    clip[0, 0, 2:, :2, :2] = 3.0
    clip[0, 1, :2, 6:, 6:] = 1.0
    cams = grad_cam(model, clip)
    assert cams.classes.tolist() == [0]  # the larger blob wins
    np.testing.assert_allclose(cams.heatmaps[0], clip[0, 0].numpy() / 3.0, atol=1e-6)
    explained = grad_cam(model, clip, target_classes=torch.tensor([1]))
    np.testing.assert_allclose(explained.heatmaps[0], clip[0, 1].numpy(), atol=1e-6)
    assert explained.probabilities[0] == pytest.approx(torch.softmax(model(clip), 1)[0, 1].item(), rel=1e-5)


def test_grad_cam_on_a_video_net_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = build_model("r3d_18", 3, num_classes=5, width_multiplier=0.125, layers=(1, 1, 1, 1))
    model.train()
    clips = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    cams = grad_cam(model, clips)
    assert cams.heatmaps.shape == (2, 4, 32, 32) and cams.heatmaps.dtype == np.float32
    assert cams.heatmaps.min() >= 0.0 and cams.heatmaps.max() <= 1.0 + 1e-6
    model.eval()
    with torch.no_grad():
        assert cams.classes.tolist() == model(clips).argmax(1).tolist()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match=r"expected \[2\]"):
        grad_cam(model, clips, target_classes=torch.tensor([0]))


def test_overlay_heatmap_blends_a_resampled_heat_map():
    frames = np.full((4, 16, 16, 3), 200, dtype=np.uint8)
    heat = np.ones((2, 4, 4), dtype=np.float32)
    np.testing.assert_array_equal(overlay_heatmap(frames, heat, alpha=0.0), frames)
    hot = overlay_heatmap(frames, heat, alpha=1.0)
    assert hot.shape == frames.shape
    np.testing.assert_array_equal(hot[0, 0, 0], [128, 0, 0])  # jet at 1.0 is dark red
    with pytest.raises(ValueError, match=r"expected \[T, H, W, 3\] uint8"):
        overlay_heatmap(frames.astype(np.float32), heat)


def test_gradcam_png(tmp_path):
    model = ChannelEvidenceNet(torch.eye(3))
    clips = torch.rand(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    frames = [
        np.random.default_rng(b).integers(0, 256, size=(6, 24, 24, 3), dtype=np.uint8) for b in range(2)
    ]
    path = plots.plot_gradcam(frames, grad_cam(model, clips), ["a", "b", "c"], str(tmp_path / "gradcam.png"))
    assert png_size(path) == (320, 2 * 2 * 110)
