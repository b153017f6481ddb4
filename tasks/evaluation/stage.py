"""The evaluate stage: every method's target accuracy, retrieval, few-shot probes and cost, the diagnostics
(cluster quality, pseudo-label accuracy, confusions) and the plots, gathered from a trained run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from motionfit.models.complexity import count_complexity
from motionfit.models.video_net import VideoNet, build_model
from motionfit.storage import fs
from motionfit.storage.layout import RunLayout
from motionfit.storage.tables import read_table, table_exists
from motionfit.tasks.data.clips import labelled_videos
from motionfit.tasks.data.transforms import centre_box, crop_resize, normalise
from motionfit.tasks.evaluation.features import forward_seconds_per_clip, video_features
from motionfit.tasks.evaluation.gradcam import grad_cam
from motionfit.tasks.evaluation.metrics import (
    confusion_matrix,
    cosine_neighbours,
    fewshot_records,
    linear_probe_fewshot,
    metrics_frame,
    most_confused_pairs,
    percent_of_supervised_frame,
    retrieval_recall_at_k,
    student_inference_cost,
    teacher_inference_cost,
    video_top1,
)
from motionfit.tasks.evaluation.plots import (
    plot_confusion_matrix,
    plot_gradcam,
    plot_retrieval_examples,
    plot_training_curves,
)
from motionfit.tasks.methods import METHODS, training_stages
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import compute_tvl1_flow
from motionfit.tasks.prior.clustering import cluster_quality
from motionfit.tasks.training.finetune import predict_videos
from motionfit.tasks.training.loop import (
    load_network,
    model_args,
    seed_everything,
)
from motionfit.tasks.training.pseudo_labels import pseudo_label_accuracy

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """What the evaluate stage produced: the metrics rows, the plots (caption -> PNG URL), the most-confused
    pairs of the main method, the clip geometry of the evaluated networks and the test videos each method
    was scored on, of those listed."""

    metrics: pd.DataFrame
    plots: dict[str, str] = field(default_factory=dict)
    confused_pairs: pd.DataFrame | None = None
    confused_method: str = "motionfit"
    frames: int = 16
    resolution: int = 112
    test_videos: dict[str, int] = field(default_factory=dict)
    listed_test_videos: int = 0


@dataclass
class _Network:
    model: VideoNet
    modality: str
    clip_length: int
    crop_size: int
    frame_stride: int


def _network_from_checkpoint(url: str, device: str) -> _Network:
    model, checkpoint = load_network(url, device)
    config = checkpoint["config"]
    modality = "flow" if checkpoint["network_args"]["in_channels"] == 2 else "rgb"
    return _Network(
        model, modality, config["clip_length"], config["crop_size"], config.get("frame_stride", 1)
    )


def representation(method: str, layout: RunLayout, finetune_config: Any, device: str, seed: int) -> _Network:
    """The network whose frozen features represent ``method`` before target fine-tuning: the teacher (flow),
    a student, or for ``scratch`` a randomly initialised network (seeded) of the fine-tuning architecture."""
    stage = METHODS[method].representation_stage
    if stage is not None:
        return _network_from_checkpoint(layout.checkpoint(stage), device)
    seed_everything(seed)
    model = build_model(**model_args(finetune_config, 3, None)).to(device).eval()
    return _Network(
        model, "rgb", finetune_config.clip_length, finetune_config.crop_size, finetune_config.frame_stride
    )


def _features(
    network: _Network, layout: RunLayout, video_ids: list[str], n_clips: int, device: str
) -> tuple[list[str], np.ndarray]:
    return video_features(
        network.model,
        layout,
        video_ids,
        network.modality,
        n_clips=n_clips,
        clip_length=network.clip_length,
        crop_size=network.crop_size,
        frame_stride=network.frame_stride,
        device=device,
    )


def method_test_probabilities(
    method: str, layout: RunLayout, test_ids: list[str], n_clips: int, device: str
) -> tuple[list[str], np.ndarray]:
    """``(video_ids, probabilities [V, K])`` of ``method`` on the target test videos: the fine-tuning stage's
    stored predictions, or those of the evaluated network (the flow teacher, CMPL's primary network)."""
    entry = METHODS[method]
    if not entry.finetuned:
        network = _network_from_checkpoint(layout.checkpoint(entry.evaluated_stage), device)
        return predict_videos(
            network.model,
            layout,
            test_ids,
            network.modality,
            n_clips,
            network.clip_length,
            network.crop_size,
            network.frame_stride,
            device=device,
        )
    table = read_table(layout.test_predictions(entry.evaluated_stage))
    return list(table["video_id"]), np.stack(table["probabilities"].to_numpy()).astype(np.float32)


def flow_seconds_per_pair(
    layout: RunLayout, video_ids: list[str], flow_config: FlowConfig, n_videos: int = 3
) -> float:
    """TV-L1 seconds per frame pair, measured now on the stored frames of up to ``n_videos`` videos."""
    store = layout.store("frames")
    seconds, pairs = 0.0, 0
    for video_id in video_ids[:n_videos]:
        frames = store.read(video_id)
        start = time.perf_counter()
        compute_tvl1_flow(frames, flow_config)
        seconds += time.perf_counter() - start
        pairs += len(frames) - 1
    return seconds / max(pairs, 1)


def _retrieval_plot(
    layout: RunLayout,
    train_ids: list[str],
    train_feats: np.ndarray,
    test_ids: list[str],
    test_feats: np.ndarray,
    labels: dict[str, Any],
    count: int,
) -> str:
    """The first ``count`` test videos with their 3 nearest training videos (MotionFit supplement, Fig. 1)."""
    neighbours = cosine_neighbours(test_feats[:count], train_feats, k=3)
    return plot_retrieval_examples(
        layout.store("frames"),
        test_ids[:count],
        [[train_ids[j] for j in row] for row in neighbours],
        layout.plot("retrieval_examples"),
        labels=labels,
    )


def _gradcam_plot(
    layout: RunLayout, method: str, test_ids: list[str], class_names: list[str], count: int, device: str
) -> str:
    """Grad-CAM heat maps of the fine-tuned ``method`` network on the first ``count`` test videos."""
    network = _network_from_checkpoint(layout.checkpoint(METHODS[method].evaluated_stage), device)
    store = layout.store("frames")
    frames = [store.read(video_id)[: network.clip_length] for video_id in test_ids[:count]]
    clips = torch.stack([_centre_clip(f, network.crop_size) for f in frames]).to(device)
    cams = grad_cam(network.model, clips)
    return plot_gradcam(frames, cams, class_names, layout.plot(f"gradcam_{method}"), titles=test_ids[:count])


def _centre_clip(frames: np.ndarray, crop_size: int) -> torch.Tensor:
    """``[T, H, W, 3] uint8`` frames as the network's centre-cropped ``[3, T, crop, crop]`` input."""
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    box = centre_box(frames.shape[1], frames.shape[2], 1.0)
    return normalise(crop_resize(tensor, box, crop_size), "rgb")  # [3, T, crop, crop]


def evaluate_run(
    layout: RunLayout,
    manifest: pd.DataFrame,
    methods: list[str],
    config: Any,
    device: str,
    seed: int,
) -> EvaluationResult:
    """Evaluate every trained method of ``methods`` (``config`` is the pipeline config) on the target."""
    evaluation = config.evaluate
    train = labelled_videos(manifest, "train")
    test = labelled_videos(manifest, "test")
    labelled = manifest[(manifest["dataset"] == "target") & (manifest["label_index"] >= 0)]
    class_names = list(labelled.sort_values("label_index").drop_duplicates("label_index")["label"])
    labels = dict(zip(manifest["video_id"], manifest.get("heldout_label", manifest["label"]), strict=True))
    label_index = dict(zip(test["video_id"], test["label_index"], strict=True))
    train_index = dict(zip(train["video_id"], train["label_index"], strict=True))
    records: list[dict[str, Any]] = []
    result = EvaluationResult(metrics=pd.DataFrame(), listed_test_videos=len(test))
    probes = len(set(train_index.values())) >= 2
    if not probes:  # data.labelled_sampling uniform may keep the labels of one class only
        logger.warning("few-shot probes skipped: the labelled train videos hold fewer than two classes")
    main_method = "motionfit" if "motionfit" in methods else methods[0]
    for method in methods:
        ids, probabilities = method_test_probabilities(
            method, layout, list(test["video_id"]), evaluation.test_clips, device
        )
        truth = np.array([label_index[v] for v in ids])
        records.append({"method": method, "metric": "top1", "value": video_top1(probabilities, truth)})
        result.test_videos[method] = len(ids)
        if method == main_method:
            confusion = confusion_matrix(probabilities.argmax(1), truth, len(class_names))
            result.confused_pairs = most_confused_pairs(confusion, class_names, evaluation.confused_pairs)
            result.confused_method = method
            result.plots[f"Confusion matrix ({method})"] = plot_confusion_matrix(
                confusion, class_names, layout.plot(f"confusion_{method}")
            )
        network = representation(method, layout, config.finetune, device, seed)
        train_ids, train_feats = _features(
            network, layout, list(train["video_id"]), evaluation.retrieval_clips, device
        )
        test_ids, test_feats = _features(
            network, layout, list(test["video_id"]), evaluation.retrieval_clips, device
        )
        train_labels = np.array([train_index[v] for v in train_ids])
        test_labels = np.array([label_index[v] for v in test_ids])
        ks = [k for k in evaluation.retrieval_ks if k <= len(train_ids)]
        recalls = retrieval_recall_at_k(test_feats, test_labels, train_feats, train_labels, ks)
        records += [{"method": method, "metric": f"r@{k}", "value": value} for k, value in recalls.items()]
        if probes:
            fewshot = linear_probe_fewshot(
                train_feats,
                train_labels,
                test_feats,
                test_labels,
                evaluation.fewshot_shots,
                evaluation.fewshot_seeds,
            )
            records += fewshot_records(fewshot, method, "test", seed)
        if method == main_method and evaluation.retrieval_examples:
            result.plots[f"Retrieval: test queries and their 3 nearest training videos ({method})"] = (
                _retrieval_plot(
                    layout,
                    train_ids,
                    train_feats,
                    test_ids,
                    test_feats,
                    labels,
                    evaluation.retrieval_examples,
                )
            )
        if method == "teacher" or method == main_method:  # the network that infers: the evaluated one
            entry = METHODS[method]
            deployed = (
                network
                if entry.evaluated_stage == entry.representation_stage
                else _network_from_checkpoint(layout.checkpoint(entry.evaluated_stage), device)
            )
            channels = 2 if deployed.modality == "flow" else 3
            shape = (channels, deployed.clip_length, deployed.crop_size, deployed.crop_size)
            gmacs, params = count_complexity(deployed.model, shape)
            seconds = forward_seconds_per_clip(deployed.model, shape, device=device)
            if deployed.modality == "flow":  # the teacher on flow pays for its TV-L1 input
                per_pair = flow_seconds_per_pair(layout, list(test["video_id"]), config.flow)
                cost = teacher_inference_cost(gmacs, params, per_pair, deployed.clip_length, seconds)
            else:
                cost = student_inference_cost(gmacs, params, seconds, method=method)
            records += cost.records("test", seed)
        if method == main_method:
            result.frames, result.resolution = network.clip_length, network.crop_size
    if evaluation.gradcam_videos and METHODS[main_method].finetuned:
        result.plots[f"Grad-CAM of the fine-tuned {main_method} student"] = _gradcam_plot(
            layout, main_method, list(test["video_id"]), class_names, evaluation.gradcam_videos, device
        )
    records += _diagnostics(layout, manifest, labels, result)
    histories = {
        stage: read_table(layout.history(stage))
        for stage in training_stages()
        if table_exists(layout.history(stage))
    }
    if histories:
        result.plots["Training curves"] = plot_training_curves(histories, layout.plot("training_curves"))
    records += training_steps_records(methods, histories)
    records += cmpl_pseudo_label_records(histories)
    metrics = metrics_frame([{"split": "test", "seed": seed, **record} for record in records])
    pct = percent_of_supervised_frame(metrics)
    result.metrics = pd.concat([metrics, pct], ignore_index=True) if len(pct) else metrics
    return result


def training_steps_records(methods: list[str], histories: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """``train_steps`` of each method: the optimiser steps of every stage its evaluated network went through
    (its student, or the teacher, and its fine-tuning), so that methods are compared at known budgets; none
    for a method with a stage whose history does not count steps (written by older code)."""
    records = []
    for name in methods:
        method = METHODS[name]
        stages = [s for s in (method.representation_stage, method.finetune_stage) if s in histories]
        if stages and all("steps" in histories[s] for s in stages):
            total = sum(histories[s]["steps"].sum() for s in stages)
            records.append({"method": name, "metric": "train_steps", "value": float(total)})
    return records


def cmpl_pseudo_label_records(histories: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """CMPL's primary network's pseudo-labels in its last epoch: their accuracy against the source's held-out
    labels and the share that passed the confidence mask (both in percent, from the student's history)."""
    history = histories.get(METHODS["cmpl"].student_stage or "")
    if history is None or "primary_pseudo_label_top1" not in history:
        return []
    last = history.iloc[-1]
    return [
        {"method": "cmpl", "metric": metric, "value": float(last[column]), "split": "source"}
        for metric, column in (
            ("pseudo_label_acc", "primary_pseudo_label_top1"),
            ("pseudo_label_mask_rate", "primary_mask_rate"),
        )
    ]


def _diagnostics(
    layout: RunLayout, manifest: pd.DataFrame, labels: dict[str, Any], result: EvaluationResult
) -> list[dict[str, Any]]:
    """Cluster NMI/AMI/purity and pseudo-label accuracy where labels exist."""
    records = []
    if table_exists(layout.clusters):
        clusters = read_table(layout.clusters)
        quality = cluster_quality(clusters, pd.Series(labels).dropna())
        for row in quality.itertuples():
            records += [
                {
                    "method": "idt_clusters",
                    "metric": "cluster_nmi",
                    "value": row.nmi,
                    "split": "source",
                    "seed": row.run,
                },
                {
                    "method": "idt_clusters",
                    "metric": "cluster_ami",
                    "value": row.ami,
                    "split": "source",
                    "seed": row.run,
                },
                {
                    "method": "idt_clusters",
                    "metric": "cluster_purity",
                    "value": 100.0 * row.purity,
                    "split": "source",
                    "seed": row.run,
                },
            ]
        picture = layout.plot("cluster_examples")  # drawn by the cluster stage
        if fs.exists(picture):
            result.plots["IDT clusters: member videos of the largest clusters"] = picture
    if table_exists(layout.pseudo_labels):
        accuracy = pseudo_label_accuracy(read_table(layout.pseudo_labels), manifest)
        for name, metric in (("clip_top1", "pseudo_label_acc"), ("video_top1", "pseudo_label_video_acc")):
            if np.isfinite(accuracy[name]):
                records.append(
                    {
                        "method": "motionfit",
                        "metric": metric,
                        "value": accuracy[name],
                        "split": "source",
                    }
                )
    return records
