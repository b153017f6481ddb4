import math

import numpy as np
import pandas as pd
import pytest
import torch

from motionfit.models.video_net import build_model
from motionfit.storage.layout import RunLayout
from motionfit.tasks.data.transforms import KINETICS_MEAN, KINETICS_STD
from motionfit.tasks.evaluation import metrics as evaluation_metrics
from motionfit.tasks.evaluation.features import forward_seconds_per_clip, video_features


def test_video_top1_counts_argmax_hits_in_percent():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert evaluation_metrics.video_top1(probs, [0, 0, 0]) == pytest.approx(200.0 / 3.0)
    assert evaluation_metrics.video_top1(probs, [0, 1, 0]) == 100.0
    with pytest.raises(ValueError, match="labels has 2 entries; expected 3"):
        evaluation_metrics.video_top1(probs, [0, 1])


def test_confusion_matrix_rows_are_true_classes():
    confusion = evaluation_metrics.confusion_matrix([0, 1, 1, 2, 0], [0, 0, 1, 2, 2], num_classes=3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 3\)"):
        evaluation_metrics.confusion_matrix([3], [0], num_classes=3)


def test_most_confused_pairs_ranks_symmetric_confusions():
    confusion = np.array([[5, 3, 0], [1, 6, 2], [0, 4, 7]])
    pairs = evaluation_metrics.most_confused_pairs(confusion, ["jump", "run", "walk"])
    assert pairs[["class_a", "class_b", "a_as_b", "b_as_a", "confusions"]].values.tolist() == [
        ["run", "walk", 2, 4, 6],
        ["jump", "run", 3, 1, 4],
    ]  # jump/walk never confused: left out
    np.testing.assert_allclose(pairs["rate"], [100.0 * 6 / 20, 100.0 * 4 / 17])
    assert len(evaluation_metrics.most_confused_pairs(confusion, ["jump", "run", "walk"], top=1)) == 1


def _unit(angle_deg: float, scale: float = 1.0) -> list[float]:
    return [scale * math.cos(math.radians(angle_deg)), scale * math.sin(math.radians(angle_deg))]


def test_retrieval_recall_with_a_known_cosine_ranking():
    # Gallery by angle from the queries' direction (0 degrees): 10, 20 (far away but same direction: cosine
    # ignores the norm), 30, 90, 180 degrees.
    gallery = np.array([_unit(10), _unit(20, scale=100.0), _unit(30), _unit(90), _unit(180)])
    gallery_labels = np.array([1, 0, 1, 0, 0])
    queries = np.array([_unit(0), _unit(0, scale=0.1), _unit(0)])
    query_labels = np.array([0, 1, 2])  # first hit at rank 2, at rank 1, never
    np.testing.assert_array_equal(evaluation_metrics.cosine_neighbours(queries, gallery, 3), [[0, 1, 2]] * 3)
    recall = evaluation_metrics.retrieval_recall_at_k(
        queries, query_labels, gallery, gallery_labels, ks=(1, 2, 5, 50)
    )
    assert recall == pytest.approx({1: 100 / 3, 2: 200 / 3, 5: 200 / 3, 50: 200 / 3})
    chunked = evaluation_metrics.retrieval_recall_at_k(
        queries, query_labels, gallery, gallery_labels, ks=(1, 2), chunk_size=1
    )
    assert chunked == pytest.approx({1: 100 / 3, 2: 200 / 3})
    with pytest.raises(ValueError, match="query_feats have 2 dims but gallery_feats have 3"):
        evaluation_metrics.retrieval_recall_at_k(queries, query_labels, np.ones((5, 3)), gallery_labels)


def _directional_clusters(
    n_per_class: int, n_classes: int, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Classes along orthogonal directions (the same for every ``seed``), noise drawn from ``seed``."""
    centres = np.linalg.qr(np.random.default_rng(123).normal(size=(dim, dim)))[0][:n_classes] * 5.0
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return centres[labels] + rng.normal(scale=0.3, size=(labels.size, dim)), labels


def test_linear_probe_fewshot_separates_separable_classes():
    train, train_labels = _directional_clusters(25, 3, 8, seed=0)
    test, test_labels = _directional_clusters(10, 3, 8, seed=1)
    summary = evaluation_metrics.linear_probe_fewshot(
        train, train_labels, test, test_labels, shots=(1, 5, 40, "all")
    )
    assert summary["shots"].tolist() == ["1", "5", "40", "all"]
    assert (summary["mean"] >= 99.0).all()
    assert summary["n_train"].tolist() == [3, 15, 75, 75]  # 40-shot takes all 25 of each class
    assert summary["n_seeds"].tolist() == [3, 3, 3, 1]


def test_linear_probe_fewshot_is_at_chance_on_shuffled_labels():
    train, train_labels = _directional_clusters(25, 3, 8, seed=0)
    test, test_labels = _directional_clusters(30, 3, 8, seed=1)
    shuffled = np.random.default_rng(2).permutation(train_labels)
    summary = evaluation_metrics.linear_probe_fewshot(train, shuffled, test, test_labels, shots=(5,))
    assert summary["mean"].iloc[0] < 60.0
    with pytest.raises(ValueError, match="positive integers or 'all'"):
        evaluation_metrics.linear_probe_fewshot(train, train_labels, test, test_labels, shots=(0,))


def test_percent_of_supervised_frame_per_method_and_seed():
    metrics = evaluation_metrics.metrics_frame(
        [
            {"method": "supervised", "metric": "top1", "value": 80.0},
            {"method": "motionfit", "metric": "top1", "value": 60.0, "seed": 0},
            {"method": "motionfit", "metric": "top1", "value": 70.0, "seed": 1},
            {"method": "scratch", "metric": "r@1", "value": 10.0},
        ]
    )
    derived = evaluation_metrics.percent_of_supervised_frame(metrics)
    assert derived[["method", "metric", "seed"]].values.tolist() == [
        ["motionfit", "pct_sup_top1", 0],
        ["motionfit", "pct_sup_top1", 1],
    ]
    np.testing.assert_allclose(derived["value"], [75.0, 87.5])
    assert evaluation_metrics.percent_of_supervised_frame(metrics[metrics["method"] != "supervised"]).empty


def test_teacher_cost_adds_measured_flow_time_and_student_has_none():
    teacher = evaluation_metrics.teacher_inference_cost(
        40.77, 31.35e6, flow_seconds_per_pair=0.086, frames_per_clip=16
    )
    assert (teacher.gmacs, teacher.params_m) == pytest.approx((40.77, 31.35))
    assert teacher.flow_seconds_per_clip == pytest.approx(1.376)
    student = evaluation_metrics.student_inference_cost(40.77, 31.35e6)
    assert (student.method, student.flow_seconds_per_clip) == ("motionfit", 0.0)
    records = evaluation_metrics.metrics_frame(teacher.records() + student.records())
    assert len(records) == 6 and set(records["metric"]) == {"gmacs", "params_m", "flow_seconds_per_clip"}
    timed = evaluation_metrics.student_inference_cost(40.77, 31.35e6, network_seconds_per_clip=0.5).records()
    assert {"metric": "network_seconds_per_clip", "value": 0.5} in [
        {"metric": r["metric"], "value": r["value"]} for r in timed
    ]


def test_metrics_frame_defaults_and_errors():
    frame = evaluation_metrics.metrics_frame([{"method": "scratch", "metric": "top1", "value": 58.9}])
    assert frame.to_dict("records") == [
        {"method": "scratch", "metric": "top1", "value": 58.9, "split": "test", "seed": 0}
    ]
    with pytest.raises(ValueError, match=r"lacks \['value'\]"):
        evaluation_metrics.metrics_frame([{"method": "scratch", "metric": "top1"}])


def test_fewshot_records_hold_mean_and_probe_std():
    summary = pd.DataFrame({"shots": ["1", "all"], "mean": [40.0, 80.0], "std": [2.0, 0.0]})
    records = evaluation_metrics.fewshot_records(summary, "motionfit")
    assert [(r["metric"], r["value"]) for r in records] == [
        ("fewshot_1", 40.0),
        ("fewshot_1_std", 2.0),
        ("fewshot_all", 80.0),
        ("fewshot_all_std", 0.0),
    ]


def test_append_metrics_replaces_rows_with_the_same_key(tmp_path):
    layout = RunLayout.at(tmp_path)
    assert evaluation_metrics.read_metrics(layout).empty
    first = evaluation_metrics.metrics_frame(
        [
            {"method": "scratch", "metric": "top1", "value": 50.0},
            {"method": "scratch", "metric": "top1", "value": 52.0, "seed": 1},
        ]
    )
    evaluation_metrics.append_metrics(layout, first)
    update = evaluation_metrics.metrics_frame(
        [
            {"method": "scratch", "metric": "top1", "value": 58.9},
            {"method": "motionfit", "metric": "top1", "value": 87.4},
        ]
    )
    merged = evaluation_metrics.append_metrics(layout, update)
    stored = evaluation_metrics.read_metrics(layout)
    pd.testing.assert_frame_equal(stored, merged)
    assert sorted(map(tuple, stored[["method", "seed", "value"]].values.tolist())) == [
        ("motionfit", 0, 87.4),
        ("scratch", 0, 58.9),
        ("scratch", 1, 52.0),
    ]
    with pytest.raises(ValueError, match="lacks columns"):
        evaluation_metrics.append_metrics(layout, pd.DataFrame({"method": ["x"]}))


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("r3d_18", 3, num_classes=4, width_multiplier=0.125, layers=(1, 1, 1, 1))


def test_video_features_average_centre_clips_of_stored_videos(tmp_path, tiny_model):
    layout = RunLayout.at(tmp_path)
    store = layout.store("frames")
    colours = {"grey": (128, 128, 128), "orange": (250, 120, 10)}
    for video_id, colour in colours.items():  # constant videos: every clip is the same constant clip
        store.write(video_id, np.broadcast_to(np.array(colour, dtype=np.uint8), (12, 20, 24, 3)))
    ids, features = video_features(
        tiny_model,
        layout,
        ["orange", "missing", "grey"],
        n_clips=3,
        clip_length=4,
        crop_size=16,
        batch_size=2,
    )
    assert ids == ["orange", "grey"] and features.shape == (2, tiny_model.out_features)
    mean = torch.tensor(KINETICS_MEAN).view(3, 1, 1, 1) * 255.0
    std = torch.tensor(KINETICS_STD).view(3, 1, 1, 1) * 255.0
    clips = torch.stack(
        [(torch.tensor(colours[v], dtype=torch.float32).view(3, 1, 1, 1) - mean) / std for v in ids]
    ).expand(2, 3, 4, 16, 16)
    tiny_model.eval()
    with torch.no_grad():
        reference = tiny_model.features(clips).numpy()
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-5)


def test_forward_seconds_per_clip_times_one_clip(tiny_model):
    tiny_model.train()
    seconds = forward_seconds_per_clip(tiny_model, (3, 4, 32, 32), repeats=2)
    assert 0.0 < seconds < 10.0 and tiny_model.training
