"""Classification losses on clip logits: MotionFit's multi-clip loss and (soft) pseudo-label losses."""

import torch.nn.functional as F
from torch import Tensor


def multi_clip_cross_entropy(clip_logits: Tensor, labels: Tensor) -> Tensor:
    """MotionFit's multi-clip loss: average the logits of a video's R clips, then cross-entropy.

    Args:
        clip_logits: ``[B, R, K] float`` logits of R clips of each of B videos.
        labels: ``[B] long`` class of each video.

    Returns:
        Scalar mean cross-entropy over the B videos.
    """
    if clip_logits.ndim != 3 or labels.shape != clip_logits.shape[:1]:
        raise ValueError(
            "clip_logits must be [B, R, K] and labels [B], got "
            f"{tuple(clip_logits.shape)} and {tuple(labels.shape)}"
        )
    return F.cross_entropy(clip_logits.mean(dim=1), labels)


def _check_logit_pair(logits: Tensor, target_logits: Tensor) -> None:
    if logits.ndim != 2 or logits.shape != target_logits.shape:
        raise ValueError(
            "logits and target_logits must both be [N, K], got "
            f"{tuple(logits.shape)} and {tuple(target_logits.shape)}"
        )


def soft_cross_entropy(logits: Tensor, target_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy against soft pseudo-labels ``softmax(target_logits / temperature)``.

    ``-mean_n sum_k q_nk log softmax(logits)_nk`` with ``q = softmax(target_logits / temperature)``; the
    targets carry no gradient. As the temperature goes to 0 this becomes ``hard_cross_entropy``.

    Args:
        logits: ``[N, K] float`` student logits.
        target_logits: ``[N, K] float`` teacher logits (e.g. stored clip-level pseudo-labels).
        temperature: softmax temperature of the targets, > 0.
    """
    _check_logit_pair(logits, target_logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    targets = F.softmax(target_logits.detach() / temperature, dim=1)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def hard_cross_entropy(logits: Tensor, target_logits: Tensor) -> Tensor:
    """Cross-entropy against hard pseudo-labels ``argmax(target_logits)``.

    Args:
        logits: ``[N, K] float`` student logits.
        target_logits: ``[N, K] float`` teacher logits.
    """
    _check_logit_pair(logits, target_logits)
    return F.cross_entropy(logits, target_logits.argmax(dim=1))
