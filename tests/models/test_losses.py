"""Multi-clip, soft and hard cross-entropy against direct evaluations."""

import math

import pytest
import torch

from motionfit.models.losses import hard_cross_entropy, multi_clip_cross_entropy, soft_cross_entropy


def direct_cross_entropy(logits: list[float], target: list[float]) -> float:
    """-sum_k q_k log softmax(logits)_k for one row, written out."""
    log_normaliser = math.log(sum(math.exp(z) for z in logits))
    return -sum(q * (z - log_normaliser) for q, z in zip(target, logits, strict=True))


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_multi_clip_cross_entropy_averages_clip_logits_first() -> None:
    generator = torch.Generator().manual_seed(0)
    clip_logits = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 4, 2])
    expected = 0.0
    for video, label in enumerate(labels.tolist()):
        averaged = [sum(clip_logits[video, r, k].item() for r in range(4)) / 4 for k in range(5)]
        expected += direct_cross_entropy(averaged, [float(k == label) for k in range(5)]) / 3
    assert multi_clip_cross_entropy(clip_logits, labels).item() == pytest.approx(expected, rel=1e-12)
    # Averaging the per-clip losses instead would be a different quantity.
    per_clip = torch.nn.functional.cross_entropy(clip_logits.reshape(12, 5), labels.repeat_interleave(4))
    assert per_clip.item() != pytest.approx(expected, rel=1e-3)


def test_soft_cross_entropy_matches_direct_evaluation() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    target_logits = 3 * torch.randn(4, 6, generator=generator, dtype=torch.float64)
    temperature = 2.5
    expected = 0.0
    for row, target_row in zip(logits.tolist(), target_logits.tolist(), strict=True):
        expected += direct_cross_entropy(row, softmax([z / temperature for z in target_row])) / 4
    loss = soft_cross_entropy(logits, target_logits, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_soft_cross_entropy_approaches_hard_cross_entropy_as_temperature_vanishes() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 5, generator=generator)
    target_logits = torch.randn(8, 5, generator=generator)
    hard = hard_cross_entropy(logits, target_logits)
    expected = torch.nn.functional.cross_entropy(logits, target_logits.argmax(dim=1))
    torch.testing.assert_close(hard, expected)
    torch.testing.assert_close(soft_cross_entropy(logits, target_logits, 1e-4), hard)
    assert not torch.allclose(soft_cross_entropy(logits, target_logits, 1.0), hard)


def test_soft_cross_entropy_sends_no_gradient_to_targets() -> None:
    logits = torch.randn(2, 3, requires_grad=True)
    target_logits = torch.randn(2, 3, requires_grad=True)
    soft_cross_entropy(logits, target_logits, 0.5).backward()
    assert logits.grad is not None and target_logits.grad is None


def test_shape_and_temperature_errors() -> None:
    with pytest.raises(ValueError, match=r"clip_logits must be \[B, R, K\]"):
        multi_clip_cross_entropy(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="logits and target_logits must both be"):
        soft_cross_entropy(torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature must be positive"):
        soft_cross_entropy(torch.zeros(2, 5), torch.zeros(2, 5), 0.0)
