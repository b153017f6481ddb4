"""Memory bank, instance recognition and Local Aggregation (Wu et al. 2018; Zhuang et al., ICCV 2019).

Video Local Aggregation with an IDT prior (Tokmakov, Hebert, Schmid) keeps Zhuang et al.'s loss but takes
the close neighbours from m k-means clusterings of the videos' IDT Fisher vectors instead of k-means of
the memory bank: ``cluster_labels [m, N] long`` is whichever clustering the caller supplies. Training
warms up with the instance-recognition loss, then switches to Local Aggregation; after each step the
bank rows of the batch move towards the new embeddings (``MemoryBank.update``).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LA_TEMPERATURE = 0.07
"""Softmax temperature of instance recognition and Local Aggregation (Wu et al.; Zhuang et al.)."""

LA_BACKGROUND_NEIGHBOURS = 4096
"""Background neighbours k of Local Aggregation (Zhuang et al.)."""

IR_NEGATIVES = 4096
"""Negatives per sample of instance recognition (Wu et al.'s NCE setting)."""

BANK_MOMENTUM = 0.5
"""Memory bank momentum m: ``v <- normalise(m v + (1 - m) x)`` (Zhuang et al.)."""


class MemoryBank(nn.Module):
    """Unit-norm embeddings of every training sample, ``embeddings [N, D] float32`` (a buffer, so it
    follows the module's device and is saved in its state dict). Rows start as random unit vectors.

    Args:
        n_items: N, the number of training samples (videos).
        dim: D, the embedding size (128).
        momentum: m of the update rule.
        generator: random generator for the initial rows.
    """

    def __init__(
        self,
        n_items: int,
        dim: int = 128,
        momentum: float = BANK_MOMENTUM,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_items < 1 or dim < 1:
            raise ValueError(f"n_items and dim must be positive, got {n_items} and {dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("embeddings", F.normalize(torch.randn(n_items, dim, generator=generator), dim=1))

    def update(self, indices: Tensor, embeddings: Tensor) -> None:
        """``v_i <- normalise(m v_i + (1 - m) x_i)`` for each row ``i`` of ``indices``.

        Args:
            indices: ``[B] long`` distinct bank rows.
            embeddings: ``[B, D] float`` new embeddings (detached here).
        """
        _check_batch(embeddings, indices, self.embeddings)
        if torch.unique(indices).numel() != indices.numel():
            raise ValueError("indices must be distinct within a batch to update the memory bank")
        with torch.no_grad():
            mixed = self.momentum * self.embeddings[indices] + (1.0 - self.momentum) * embeddings.detach()
            self.embeddings[indices] = F.normalize(mixed.to(self.embeddings.dtype), dim=1)


def _check_batch(embeddings: Tensor, indices: Tensor, bank: Tensor) -> None:
    if bank.ndim != 2 or embeddings.ndim != 2 or embeddings.shape[1] != bank.shape[1]:
        raise ValueError(
            "embeddings must be [B, D] and bank [N, D], got "
            f"{tuple(embeddings.shape)} and {tuple(bank.shape)}"
        )
    if indices.shape != embeddings.shape[:1] or indices.dtype != torch.long:
        raise ValueError(
            f"indices must be [B] long with B={embeddings.shape[0]}, "
            f"got {tuple(indices.shape)} {indices.dtype}"
        )
    if indices.numel() and not 0 <= int(indices.min()) <= int(indices.max()) < bank.shape[0]:
        raise ValueError(
            f"indices must lie in [0, {bank.shape[0]}), got min {int(indices.min())} max {int(indices.max())}"
        )


def instance_recognition_loss(
    embeddings: Tensor,
    indices: Tensor,
    bank: Tensor,
    temperature: float = LA_TEMPERATURE,
    n_negatives: int | None = IR_NEGATIVES,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Instance recognition (Wu et al. 2018): the non-parametric softmax ``-log exp(v_i.x/T) / sum_j
    exp(v_j.x/T)``, averaged over the batch, where ``v_i`` is the sample's own bank row.

    The sum runs over ``v_i`` and ``n_negatives`` rows drawn uniformly, with replacement, from the other
    N - 1 rows (a sampled softmax in place of Wu et al.'s NCE approximation); over the whole bank when
    ``n_negatives`` is None or at least N - 1 (the exact softmax).

    Args:
        embeddings: ``[B, D] float`` L2-normalised embeddings x.
        indices: ``[B] long`` bank rows of the samples.
        bank: ``[N, D] float`` memory bank rows (no gradient flows into them).
        temperature: T.
        n_negatives: negatives per sample.
        generator: random generator for the negatives (on the bank's device).

    Returns:
        Scalar loss.
    """
    _check_batch(embeddings, indices, bank)
    bank = bank.detach()
    n_items = bank.shape[0]
    if n_negatives is None or n_negatives >= n_items - 1:
        return F.cross_entropy(embeddings @ bank.T / temperature, indices)
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be positive or None, got {n_negatives}")
    negatives = torch.randint(
        n_items - 1, (indices.shape[0], n_negatives), generator=generator, device=bank.device
    )
    negatives += (negatives >= indices[:, None]).long()  # skip the sample's own row
    candidates = torch.cat([indices[:, None], negatives], dim=1)  # [B, 1 + n_negatives], own row first
    logits = torch.einsum("bd,bkd->bk", embeddings, bank[candidates]) / temperature
    return F.cross_entropy(logits, torch.zeros_like(indices))


def local_aggregation_loss(
    embeddings: Tensor,
    indices: Tensor,
    bank: Tensor,
    cluster_labels: Tensor,
    temperature: float = LA_TEMPERATURE,
    k_background: int = LA_BACKGROUND_NEIGHBOURS,
    include_self: bool = True,
) -> Tensor:
    """Local Aggregation (Zhuang et al. 2019), averaged over the batch:
    ``-log( sum_{j in C_i ∩ B_i} exp(v_j.x_i/T) / sum_{j in B_i} exp(v_j.x_i/T) )``.

    - Background neighbours B_i: sample i's own row plus the ``k_background - 1`` bank rows closest to
      ``x_i`` by cosine similarity (the whole bank when ``k_background >= N``).
    - Close neighbours C_i: the rows sharing a cluster with i in ANY of the m clusterings (IDT prior:
      k-means runs on IDT Fisher vectors), and i itself.

    With ``include_self`` False, sample i's own row is in neither set (B_i: the ``k_background`` closest
    other rows), so an embedding that only tells videos apart does not lower the loss; samples whose
    clusters hold no other row are left out of the mean.

    Args:
        embeddings: ``[B, D] float`` L2-normalised embeddings x.
        indices: ``[B] long`` bank rows of the samples.
        bank: ``[N, D] float`` memory bank rows v (no gradient flows into them).
        cluster_labels: ``[m, N] long`` cluster of every bank row in each of m clusterings.
        temperature: T.
        k_background: size of B_i.
        include_self: whether i's own row belongs to B_i and C_i (Zhuang et al.: it does).

    Returns:
        Scalar loss.
    """
    _check_batch(embeddings, indices, bank)
    if cluster_labels.ndim != 2 or cluster_labels.shape[1] != bank.shape[0]:
        raise ValueError(
            f"cluster_labels must be [m, N] with N={bank.shape[0]}, got {tuple(cluster_labels.shape)}"
        )
    if k_background < 1:
        raise ValueError(f"k_background must be positive, got {k_background}")
    similarities = embeddings @ bank.detach().T  # [B, N]
    n_background = min(k_background, bank.shape[0] - (0 if include_self else 1))
    with torch.no_grad():
        own = float("inf") if include_self else float("-inf")
        ranking = similarities.detach().scatter(1, indices[:, None], own)
        background = ranking.topk(n_background, dim=1).indices  # [B, k]
    logits = similarities.gather(1, background) / temperature
    own_clusters = cluster_labels[:, indices]  # [m, B]
    close = (cluster_labels[:, background] == own_clusters[:, :, None]).any(dim=0)
    is_self = background == indices[:, None]
    close = close | is_self if include_self else close & ~is_self
    scored = close.any(dim=1)
    if not bool(scored.any()):
        return similarities.sum() * 0.0  # no sample has another row in its clusters
    log_close = torch.logsumexp(logits[scored].masked_fill(~close[scored], float("-inf")), dim=1)
    return (torch.logsumexp(logits[scored], dim=1) - log_close).mean()


def _shares_a_cluster(cluster_labels: Tensor, rows: Tensor, chunk: int = 65536) -> Tensor:
    """``[len(rows), N] bool``: whether bank row j shares a cluster with row i (in any clustering)."""
    parts = [
        (cluster_labels[:, rows, None] == cluster_labels[:, None, start : start + chunk]).any(dim=0)
        for start in range(0, cluster_labels.shape[1], chunk)
    ]
    return torch.cat(parts, dim=1)


def local_aggregation_chance(
    cluster_labels: Tensor, rows: Tensor | None = None, include_self: bool = True
) -> float:
    """The Local Aggregation loss of an embedding that ignores the clusters, ``mean_i -log(|C_i| / N)``
    over ``rows`` (default all): its background neighbours are then a random draw, of which the close
    neighbours C_i (the rows sharing a cluster with i in any clustering, i included) make |C_i| / N. Without
    ``include_self`` (see :func:`local_aggregation_loss`), ``-log((|C_i| - 1) / (N - 1))`` over the rows
    whose clusters hold another row."""
    n_items = cluster_labels.shape[1]
    rows = torch.arange(n_items, device=cluster_labels.device) if rows is None else rows
    close = _shares_a_cluster(cluster_labels, rows).sum(dim=1).double()
    if not include_self:
        close, n_items = close[close > 1] - 1, n_items - 1
    return float((math.log(n_items) - torch.log(close)).mean())


def bank_health(
    bank: Tensor,
    cluster_labels: Tensor | None = None,
    n_neighbours: int = 10,
    sample: int = 2048,
    seed: int = 0,
) -> dict[str, float]:
    """Whether a memory bank has learned the clusters or collapsed, on a seeded sample of its rows:
    ``bank_mean_cosine`` (mean cosine to the other rows; near 1 means every embedding points one way) and,
    given clusterings, ``neighbour_cluster_rate`` (the fraction of each row's ``n_neighbours`` nearest rows
    that share a cluster with it) and ``neighbour_cluster_rate_chance`` (that fraction for random rows)."""
    n_items = bank.shape[0]
    if n_items < 2:
        raise ValueError(f"bank health needs at least 2 rows, got {n_items}")
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n_items, generator=generator)[: min(sample, n_items)].to(bank.device)
    similarities = bank[rows] @ bank.T  # [S, N]
    own = torch.arange(len(rows), device=bank.device)
    mean_cosine = (similarities.sum(dim=1) - similarities[own, rows]) / (n_items - 1)
    if cluster_labels is None:
        return {"bank_mean_cosine": float(mean_cosine.mean())}
    shares = _shares_a_cluster(cluster_labels, rows)
    shares[own, rows] = False
    k = min(n_neighbours, n_items - 1)
    neighbours = similarities.scatter(1, rows[:, None], float("-inf")).topk(k, dim=1).indices
    return {
        "bank_mean_cosine": float(mean_cosine.mean()),
        "neighbour_cluster_rate": float(shares.gather(1, neighbours).float().mean()),
        "neighbour_cluster_rate_chance": float(shares.sum(dim=1).double().mean() / (n_items - 1)),
    }
