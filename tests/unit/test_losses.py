"""NT-Xent and the click-pair loss against hand-written loops (lightly's style of reference)."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.losses import click_pair_loss, in_batch_negative_mask, nt_xent


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def nt_xent_reference(a: torch.Tensor, b: torch.Tensor, temperature: float) -> float:
    """SimCLR eq. 1, one anchor at a time over the 2N views."""
    views = list(a) + list(b)
    n = len(a)
    total = 0.0
    for i, anchor in enumerate(views):
        positive = (i + n) % (2 * n)
        numerator = math.exp(cosine(anchor, views[positive]) / temperature)
        denominator = sum(
            math.exp(cosine(anchor, other) / temperature) for k, other in enumerate(views) if k != i
        )
        total += -math.log(numerator / denominator)
    return total / (2 * n)


def click_reference(query, positive, negatives, counts, weights, query_ids, positive_ids, t):
    """For each pair: [positive, its negatives, other pairs' distinct positives] -> CE."""
    losses = []
    for i in range(len(query)):
        candidates = [positive[i]] + [negatives[i][k] for k in range(counts[i])]
        for j in range(len(query)):
            if j != i and positive_ids[j] not in (positive_ids[i], query_ids[i]):
                candidates.append(positive[j])
        logits = [cosine(query[i], c) / t for c in candidates]
        log_norm = math.log(sum(math.exp(x) for x in logits))
        losses.append(-(logits[0] - log_norm))
    return sum(w * loss for w, loss in zip(weights, losses, strict=True)) / sum(weights)


@pytest.mark.parametrize(("n", "temperature"), [(2, 0.1), (7, 0.5), (16, 1.0)])
def test_nt_xent_matches_the_reference_loop(n: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(n)
    a = torch.randn(n, 32, generator=generator, dtype=torch.float64)
    b = a + 0.3 * torch.randn(n, 32, generator=generator, dtype=torch.float64)
    expected = nt_xent_reference(a, b, temperature)
    assert float(nt_xent(a, b, temperature)) == pytest.approx(expected, abs=1e-6)


def test_nt_xent_refuses_mismatched_or_single_views() -> None:
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(1, 8), torch.randn(1, 8))


def test_in_batch_mask_excludes_self_same_positive_and_the_query_image() -> None:
    mask = in_batch_negative_mask(["q1", "q2", "q3", "q4"], ["p1", "p1", "q1", "p4"])
    assert mask.tolist() == [
        [False, False, False, True],  # p1 twice is not a negative; q1 is pair 0's query
        [False, False, True, True],
        [True, True, False, True],
        [True, True, True, False],
    ]


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_click_pair_loss_matches_the_reference_loop(temperature: float) -> None:
    generator = torch.Generator().manual_seed(7)
    b, k, d = 5, 4, 16
    query = torch.randn(b, d, generator=generator, dtype=torch.float64)
    positive = torch.randn(b, d, generator=generator, dtype=torch.float64)
    negatives = torch.randn(b, k, d, generator=generator, dtype=torch.float64)
    counts = [4, 0, 2, 3, 1]  # padded negatives differ per pair; pair 1 has none
    mask = torch.tensor([[i < c for i in range(k)] for c in counts])
    weights = [1.0, 2.5, 1.0, 10.0, 1.3]
    query_ids = ["a", "b", "c", "d", "e"]
    positive_ids = ["x", "x", "y", "a", "z"]
    expected = click_reference(
        query, positive, negatives, counts, weights, query_ids, positive_ids, temperature
    )
    actual = click_pair_loss(
        query,
        positive,
        negatives,
        mask,
        torch.tensor(weights, dtype=torch.float64),
        in_batch_negative_mask(query_ids, positive_ids),
        temperature,
    )
    assert float(actual) == pytest.approx(expected, abs=1e-6)


def test_click_pair_loss_is_small_when_the_positive_wins_and_large_when_a_negative_does() -> None:
    query = torch.tensor([[1.0, 0.0]])
    good = click_pair_loss(
        query, torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0]]]),
        torch.tensor([[True]]), torch.tensor([1.0]), temperature=0.1,
    )  # fmt: skip
    bad = click_pair_loss(
        query, torch.tensor([[0.0, 1.0]]), torch.tensor([[[1.0, 0.0]]]),
        torch.tensor([[True]]), torch.tensor([1.0]), temperature=0.1,
    )  # fmt: skip
    assert float(good) < 1e-3 < 9.0 < float(bad)
