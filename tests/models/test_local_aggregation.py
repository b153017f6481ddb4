"""Memory bank, instance recognition and Local Aggregation against direct evaluations."""

import math

import pytest
import torch
import torch.nn.functional as F

from motionfit.models.local_aggregation import (
    MemoryBank,
    instance_recognition_loss,
    local_aggregation_chance,
    local_aggregation_loss,
)


def unit_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=1)


def test_memory_bank_momentum_update() -> None:
    bank = MemoryBank(10, dim=4, momentum=0.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bank.embeddings.norm(dim=1), torch.ones(10))
    before = bank.embeddings.clone()
    new = F.normalize(torch.randn(2, 4), dim=1)
    bank.update(torch.tensor([3, 7]), new)
    for row, x in zip([3, 7], new, strict=True):
        mixed = 0.5 * before[row] + 0.5 * x
        torch.testing.assert_close(bank.embeddings[row], mixed / mixed.norm())
    untouched = [i for i in range(10) if i not in (3, 7)]
    torch.testing.assert_close(bank.embeddings[untouched], before[untouched])
    assert "embeddings" in bank.state_dict()
    with pytest.raises(ValueError, match="indices must be distinct"):
        bank.update(torch.tensor([1, 1]), new)


def test_instance_recognition_over_the_whole_bank() -> None:
    bank, embeddings = unit_rows(20, 8, seed=0), unit_rows(3, 8, seed=1)
    indices = torch.tensor([4, 0, 19])
    temperature = 0.07
    expected = 0.0
    for x, i in zip(embeddings.tolist(), indices.tolist(), strict=True):
        scores = [
            math.exp(sum(a * b for a, b in zip(x, v, strict=True)) / temperature) for v in bank.tolist()
        ]
        expected -= math.log(scores[i] / sum(scores)) / 3
    for n_negatives in (None, 19, 4096):  # at least N - 1 negatives: the exact softmax
        loss = instance_recognition_loss(embeddings, indices, bank, temperature, n_negatives)
        assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_sampled_instance_recognition_draws_n_negatives_other_than_self() -> None:
    # Every row but the sample's own row i is the same vector u: whichever negatives are drawn, the
    # loss is -log(e^{x.v_i/T} / (e^{x.v_i/T} + n e^{x.u/T})), unless row i itself is drawn.
    n_items, n_negatives, temperature = 500, 400, 0.5
    u = unit_rows(1, 8, seed=2)[0]
    own_rows, embeddings = unit_rows(4, 8, seed=3), unit_rows(4, 8, seed=4)
    generator = torch.Generator().manual_seed(0)
    for i, v, x in zip([5, 250, 499, 0], own_rows, embeddings, strict=True):
        bank = u.repeat(n_items, 1)
        bank[i] = v
        positive = math.exp(float(x @ v) / temperature)
        expected = -math.log(positive / (positive + n_negatives * math.exp(float(x @ u) / temperature)))
        loss = instance_recognition_loss(
            x[None], torch.tensor([i]), bank, temperature, n_negatives, generator
        )
        assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_sampled_instance_recognition_is_seeded_and_differentiable() -> None:
    bank, indices = unit_rows(100, 8, seed=5), torch.tensor([1, 2, 3])
    embeddings = unit_rows(3, 8, seed=6).requires_grad_(True)

    def loss_with_seed(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return instance_recognition_loss(embeddings, indices, bank, 0.07, 10, generator)

    assert loss_with_seed(0).item() == loss_with_seed(0).item() != loss_with_seed(1).item()
    loss_with_seed(0).backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


def direct_local_aggregation(
    embeddings: torch.Tensor,
    indices: list[int],
    bank: torch.Tensor,
    cluster_labels: list[list[int]],
    temperature: float,
    k_background: int,
    include_self: bool = True,
) -> float:
    """The definition, one sample at a time (without ``include_self``: over samples with a close row)."""
    total, counted = 0.0, 0
    for x, i in zip(embeddings.tolist(), indices, strict=True):
        similarity = [sum(a * b for a, b in zip(x, v, strict=True)) for v in bank.tolist()]
        others = sorted((j for j in range(len(similarity)) if j != i), key=lambda j: -similarity[j])
        background = [i, *others[: k_background - 1]] if include_self else others[:k_background]
        close = [j for j in background if any(run[j] == run[i] for run in cluster_labels)]
        if not close:
            continue
        numerator = sum(math.exp(similarity[j] / temperature) for j in close)
        denominator = sum(math.exp(similarity[j] / temperature) for j in background)
        total -= math.log(numerator / denominator)
        counted += 1
    return total / counted


@pytest.mark.parametrize(("k_background", "include_self"), [(8, True), (40, True), (8, False), (40, False)])
def test_local_aggregation_matches_its_definition(k_background: int, include_self: bool) -> None:
    n_items = 30
    bank, embeddings = unit_rows(n_items, 6, seed=7), unit_rows(5, 6, seed=8)
    indices = [3, 11, 0, 29, 17]
    generator = torch.Generator().manual_seed(9)
    cluster_labels = torch.randint(4, (3, n_items), generator=generator)  # m = 3 clusterings, 4 clusters each
    temperature = 0.07
    cluster_labels[:, 17] = 4  # sample 17 alone in its clusters: no close row but its own
    expected = direct_local_aggregation(
        embeddings, indices, bank, cluster_labels.tolist(), temperature, k_background, include_self
    )
    loss = local_aggregation_loss(
        embeddings, torch.tensor(indices), bank, cluster_labels, temperature, k_background, include_self
    )
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_without_its_own_row_telling_videos_apart_does_not_lower_the_loss() -> None:
    bank = unit_rows(40, 16, seed=14)
    labels = torch.arange(40).remainder(4)[None]  # 4 clusters of 10
    indices = torch.arange(40)
    own_rows = bank.clone()  # instance recognition solved: every embedding equals its own bank row
    with_self = local_aggregation_loss(own_rows, indices, bank, labels, 0.07, 40)
    without = local_aggregation_loss(own_rows, indices, bank, labels, 0.07, 40, include_self=False)
    assert with_self.item() < 0.2 * local_aggregation_chance(labels)  # the own row satisfies the loss
    assert without.item() > 0.8 * local_aggregation_chance(labels, include_self=False)
    assert local_aggregation_chance(labels, include_self=False) == pytest.approx(math.log(39 / 9))


def test_local_aggregation_limits() -> None:
    bank, embeddings = unit_rows(30, 6, seed=10), unit_rows(4, 6, seed=11).requires_grad_(True)
    indices = torch.tensor([0, 1, 2, 3])
    one_cluster = torch.zeros(2, 30, dtype=torch.long)
    assert local_aggregation_loss(embeddings, indices, bank, one_cluster, k_background=10).item() == 0.0
    singletons = torch.arange(30).repeat(2, 1)  # only the sample itself is close: instance recognition
    loss = local_aggregation_loss(embeddings, indices, bank, singletons, 0.07, k_background=30)
    torch.testing.assert_close(loss, instance_recognition_loss(embeddings, indices, bank, 0.07, None))
    loss.backward()
    assert embeddings.grad.abs().sum() > 0


def test_input_errors() -> None:
    bank, embeddings = unit_rows(10, 6, seed=12), unit_rows(2, 6, seed=13)
    with pytest.raises(ValueError, match=r"cluster_labels must be \[m, N\] with N=10"):
        local_aggregation_loss(embeddings, torch.tensor([0, 1]), bank, torch.zeros(3, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 10\)"):
        instance_recognition_loss(embeddings, torch.tensor([0, 10]), bank)
    with pytest.raises(ValueError, match=r"embeddings must be \[B, D\] and bank \[N, D\]"):
        instance_recognition_loss(embeddings[:, :4], torch.tensor([0, 1]), bank)


def test_chance_loss_and_bank_health_tell_a_collapsed_bank_from_one_that_follows_the_clusters() -> None:
    from motionfit.models.local_aggregation import bank_health

    labels = torch.arange(40).remainder(4)[None]  # one clustering: 4 clusters of 10
    assert local_aggregation_chance(labels) == pytest.approx(math.log(4))
    directions = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)))
    noise = 0.05 * torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    following = torch.nn.functional.normalize(directions[labels[0]] + noise)
    collapsed = torch.nn.functional.normalize(directions[0] + noise)
    good, bad = bank_health(following, labels, n_neighbours=5), bank_health(collapsed, labels, n_neighbours=5)
    assert good["neighbour_cluster_rate"] == pytest.approx(1.0)
    assert good["neighbour_cluster_rate_chance"] == pytest.approx(9 / 39)
    assert bad["bank_mean_cosine"] > 0.9 and good["bank_mean_cosine"] < 0.5
    assert bad["neighbour_cluster_rate"] < 0.6
