"""Pseudo-labelling schemes of CMPL (Xu et al., CVPR 2022) for two co-trained models, and FixMatch.

CMPL trains a primary model F and a lower-capacity auxiliary model A side by side. For the model being
trained ("self") every scheme turns the class probabilities of both models on the weakly augmented
unlabelled clips, ``p_self`` and ``p_other`` (``[N, K] float``, rows sum to 1), into pseudo-labels and a
mask of the clips that receive one; ``tau`` is the confidence threshold (0.95). With
``c_self = max_k p_self``, ``y_self = argmax_k p_self`` (likewise for ``other``):

- fixmatch (Sohn et al. 2020, baseline): ``y_self`` where ``c_self >= tau``.
- self_first: ``y_self`` where ``c_self >= tau``; else ``y_other`` where ``c_other >= tau``.
- opposite_first: ``y_other`` where ``c_other >= tau``; else ``y_self`` where ``c_self >= tau``.
- maximum: the label of the more confident model (``y_self`` on ties) where ``max(c_self, c_other) >=
  tau``.
- average: ``argmax_k (p_self + p_other) / 2`` where its maximum ``>= tau``.
- cross (CMPL's choice): ``y_other`` where ``c_other >= tau``; the model never learns from its own
  predictions.

Every scheme returns ``(pseudo_labels [N] long, mask [N] bool)``; labels where the mask is False are
defined (the argmax used in the formula) but must be ignored.
"""

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

CMPL_THRESHOLD = 0.95
"""Confidence threshold tau of CMPL and FixMatch."""

PseudoLabelScheme = Literal["fixmatch", "self_first", "opposite_first", "maximum", "average", "cross"]


def _check_probabilities(p_self: Tensor, p_other: Tensor | None, threshold: float) -> None:
    if p_self.ndim != 2:
        raise ValueError(f"p_self must be [N, K] probabilities, got shape {tuple(p_self.shape)}")
    if p_other is not None and p_other.shape != p_self.shape:
        raise ValueError(
            f"p_other must have p_self's shape {tuple(p_self.shape)}, got {tuple(p_other.shape)}"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")


def fixmatch_pseudo_labels(p_self: Tensor, threshold: float = CMPL_THRESHOLD) -> tuple[Tensor, Tensor]:
    """FixMatch: the model's own prediction where ``max p_self >= threshold``.

    Args:
        p_self: ``[N, K] float`` probabilities of the model being trained.
        threshold: confidence threshold tau.

    Returns:
        ``(pseudo_labels [N] long, mask [N] bool)``.
    """
    _check_probabilities(p_self, None, threshold)
    confidence, labels = p_self.max(dim=1)
    return labels, confidence >= threshold


def self_first_pseudo_labels(
    p_self: Tensor, p_other: Tensor, threshold: float = CMPL_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """Own prediction where ``max p_self >= threshold``, else the other model's where ``max p_other >=
    threshold``; shapes as in the module docstring."""
    _check_probabilities(p_self, p_other, threshold)
    confidence_self, labels_self = p_self.max(dim=1)
    confidence_other, labels_other = p_other.max(dim=1)
    confident_self = confidence_self >= threshold
    labels = torch.where(confident_self, labels_self, labels_other)
    return labels, confident_self | (confidence_other >= threshold)


def opposite_first_pseudo_labels(
    p_self: Tensor, p_other: Tensor, threshold: float = CMPL_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """The other model's prediction where ``max p_other >= threshold``, else the own one where ``max
    p_self >= threshold``; shapes as in the module docstring."""
    return self_first_pseudo_labels(p_other, p_self, threshold)


def maximum_pseudo_labels(
    p_self: Tensor, p_other: Tensor, threshold: float = CMPL_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """The more confident model's prediction (own on ties) where that confidence ``>= threshold``;
    shapes as in the module docstring."""
    _check_probabilities(p_self, p_other, threshold)
    confidence_self, labels_self = p_self.max(dim=1)
    confidence_other, labels_other = p_other.max(dim=1)
    self_wins = confidence_self >= confidence_other
    labels = torch.where(self_wins, labels_self, labels_other)
    return labels, torch.maximum(confidence_self, confidence_other) >= threshold


def average_pseudo_labels(
    p_self: Tensor, p_other: Tensor, threshold: float = CMPL_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """``argmax (p_self + p_other) / 2`` where its maximum ``>= threshold``; shapes as in the module
    docstring."""
    _check_probabilities(p_self, p_other, threshold)
    confidence, labels = ((p_self + p_other) / 2).max(dim=1)
    return labels, confidence >= threshold


def cross_pseudo_labels(
    p_self: Tensor, p_other: Tensor, threshold: float = CMPL_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """CMPL: the other model's prediction where ``max p_other >= threshold``, never the own one;
    shapes as in the module docstring."""
    _check_probabilities(p_self, p_other, threshold)
    return fixmatch_pseudo_labels(p_other, threshold)


_SCHEMES: dict[str, Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]] = {
    "fixmatch": lambda p_self, _p_other, threshold: fixmatch_pseudo_labels(p_self, threshold),
    "self_first": self_first_pseudo_labels,
    "opposite_first": opposite_first_pseudo_labels,
    "maximum": maximum_pseudo_labels,
    "average": average_pseudo_labels,
    "cross": cross_pseudo_labels,
}


def cmpl_pseudo_labels(
    scheme: PseudoLabelScheme, p_self: Tensor, p_other: Tensor, threshold: float = CMPL_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """Pseudo-labels and mask for the model being trained by the named scheme (module docstring);
    ``fixmatch`` ignores ``p_other``."""
    if scheme not in _SCHEMES:
        raise ValueError(f"unknown pseudo-labelling scheme {scheme!r}; known: {', '.join(_SCHEMES)}")
    return _SCHEMES[scheme](p_self, p_other, threshold)


def masked_pseudo_label_loss(strong_logits: Tensor, pseudo_labels: Tensor, mask: Tensor) -> Tensor:
    """Unlabelled loss of FixMatch and CMPL: cross-entropy of the strongly augmented view's logits
    against the pseudo-labels of the weak view, masked, averaged over the whole batch (masked-out clips
    count in the denominator: ``sum_n mask_n CE_n / N``).

    Args:
        strong_logits: ``[N, K] float`` logits of the model being trained on the strong views.
        pseudo_labels: ``[N] long`` labels from a scheme.
        mask: ``[N] bool`` clips that received a label.
    """
    n = strong_logits.shape[0] if strong_logits.ndim == 2 else -1
    if n < 0 or pseudo_labels.shape != (n,) or mask.shape != (n,):
        raise ValueError(
            "strong_logits must be [N, K], pseudo_labels and mask [N], got "
            f"{tuple(strong_logits.shape)}, {tuple(pseudo_labels.shape)}, {tuple(mask.shape)}"
        )
    per_clip = F.cross_entropy(strong_logits, pseudo_labels, reduction="none")
    return (per_clip * mask.to(per_clip.dtype)).sum() / max(n, 1)
