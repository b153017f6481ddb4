"""CMPL pseudo-labelling schemes on hand-made probabilities covering every branch."""

import pytest
import torch

from motionfit.models.cmpl import (
    cmpl_pseudo_labels,
    fixmatch_pseudo_labels,
    masked_pseudo_label_loss,
)

# Rows (tau = 0.95):                 self: conf, label | other: conf, label
P_SELF = torch.tensor(
    [
        [0.97, 0.02, 0.01],  # 0: both confident, disagree      0.97 0 | 0.96 1
        [0.01, 0.01, 0.98],  # 1: only self confident           0.98 2 | 0.60 0
        [0.30, 0.50, 0.20],  # 2: only other confident          0.50 1 | 0.99 2
        [0.70, 0.20, 0.10],  # 3: neither confident             0.70 0 | 0.80 1
        [0.96, 0.02, 0.02],  # 4: both, other more confident    0.96 0 | 0.99 2
        [0.02, 0.96, 0.02],  # 5: both confident, agree         0.96 1 | 0.98 1
        [0.96, 0.03, 0.01],  # 6: both, equally confident       0.96 0 | 0.96 1
    ]
)
P_OTHER = torch.tensor(
    [
        [0.02, 0.96, 0.02],
        [0.60, 0.30, 0.10],
        [0.005, 0.005, 0.99],
        [0.10, 0.80, 0.10],
        [0.005, 0.005, 0.99],
        [0.01, 0.98, 0.01],
        [0.03, 0.96, 0.01],
    ]
)
T, F = True, False
# Expected (labels, mask) written out by hand from the definitions; labels of masked-out rows are None.
EXPECTED = {
    "fixmatch": ([0, 2, None, None, 0, 1, 0], [T, T, F, F, T, T, T]),
    "self_first": ([0, 2, 2, None, 0, 1, 0], [T, T, T, F, T, T, T]),
    "opposite_first": ([1, 2, 2, None, 2, 1, 1], [T, T, T, F, T, T, T]),
    "maximum": ([0, 2, 2, None, 2, 1, 0], [T, T, T, F, T, T, T]),
    # averages: (.495 .49 .015) (.305 .155 .54) (.1525 .2525 .595) (.4 .5 .1) (.4825 .0125 .505)
    # (.015 .97 .015) (.495 .495 .01): only row 5 reaches tau
    "average": ([None, None, None, None, None, 1, None], [F, F, F, F, F, T, F]),
    "cross": ([1, None, 2, None, 2, 1, 1], [T, F, T, F, T, T, T]),
}


@pytest.mark.parametrize("scheme", sorted(EXPECTED))
def test_scheme_matches_hand_written_labels(scheme: str) -> None:
    labels, mask = cmpl_pseudo_labels(scheme, P_SELF, P_OTHER, threshold=0.95)
    expected_labels, expected_mask = EXPECTED[scheme]
    assert labels.dtype == torch.long and mask.dtype == torch.bool
    assert mask.tolist() == expected_mask
    assert [label if keep else None for label, keep in zip(labels.tolist(), mask.tolist(), strict=True)] == (
        expected_labels
    )


def test_cross_is_fixmatch_of_the_other_model() -> None:
    cross = cmpl_pseudo_labels("cross", P_SELF, P_OTHER)
    other_fixmatch = fixmatch_pseudo_labels(P_OTHER)
    assert all(torch.equal(a, b) for a, b in zip(cross, other_fixmatch, strict=True))


def test_threshold_is_inclusive() -> None:
    labels, mask = fixmatch_pseudo_labels(torch.tensor([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]]), threshold=0.5)
    assert mask.tolist() == [True, True] and labels.tolist() == [1, 0]


def test_masked_loss_averages_over_the_whole_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    strong_logits = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1, 1])
    mask = torch.tensor([True, False, True, False])
    log_probs = strong_logits.log_softmax(dim=1)
    expected = -(log_probs[0, 2] + log_probs[2, 1]) / 4
    torch.testing.assert_close(masked_pseudo_label_loss(strong_logits, labels, mask), expected)
    none_kept = masked_pseudo_label_loss(strong_logits, labels, torch.zeros(4, dtype=torch.bool))
    assert none_kept.item() == 0.0


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown pseudo-labelling scheme 'vote'"):
        cmpl_pseudo_labels("vote", P_SELF, P_OTHER)
    with pytest.raises(ValueError, match="p_other must have p_self's shape"):
        cmpl_pseudo_labels("cross", P_SELF, P_OTHER[:3])
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        cmpl_pseudo_labels("maximum", P_SELF, P_OTHER, threshold=1.5)
    with pytest.raises(ValueError, match="pseudo_labels and mask"):
        masked_pseudo_label_loss(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), torch.ones(4) > 0)
