"""Contrastive losses: SimCLR's NT-Xent and the brief's click-pair loss.

Both are "similarities -> softmax -> cross-entropy against the positive" over
L2-normalised embeddings divided by a temperature; they differ in where the
positive and the candidates come from. Tests check both against hand-written
loops (lightly's NT-Xent style of reference).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch.nn import functional


def nt_xent(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent over ``2N`` views: row ``i`` of ``view_a`` and of ``view_b`` are positives.

    Every other of the ``2N - 1`` views is a negative of each view; the loss is
    the mean over all ``2N`` anchors (SimCLR, eq. 1).
    """
    if view_a.shape != view_b.shape or view_a.ndim != 2 or len(view_a) < 2:
        raise ValueError(f"expected two (N >= 2, D) batches, got {view_a.shape}, {view_b.shape}")
    n = len(view_a)
    z = functional.normalize(torch.cat([view_a, view_b]), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return functional.cross_entropy(logits, targets)


def in_batch_negative_mask(
    query_ids: Sequence[Hashable], positive_ids: Sequence[Hashable]
) -> torch.Tensor:
    """``(B, B)``: may pair ``j``'s positive serve as a negative of pair ``i``?

    Not its own, and not when it is the same image as pair ``i``'s positive or
    query (two clicks on one image from one query are common; counting the
    image against itself would push the model away from what users chose).
    """
    codes: dict[Hashable, int] = {}
    query = torch.tensor([codes.setdefault(i, len(codes)) for i in query_ids])
    positive = torch.tensor([codes.setdefault(i, len(codes)) for i in positive_ids])
    same_positive = positive[None, :] == positive[:, None]
    is_query = positive[None, :] == query[:, None]
    return ~(same_positive | is_query)


def click_pair_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    negative_mask: torch.Tensor,
    weights: torch.Tensor,
    in_batch_mask: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> torch.Tensor:
    """The brief's loss for labelled click pairs, weighted by position bias.

    For pair ``i`` the candidates are its positive (the clicked image), its
    negatives (shown and skipped; ``negative_mask`` marks the real ones of the
    padded ``(B, K, D)`` tensor) and, where ``in_batch_mask[i, j]``, pair
    ``j``'s positive. Cosine similarities / temperature -> softmax ->
    cross-entropy against the positive. Pairs are averaged with their weights
    (inverse propensity of the click position) normalised to sum to one —
    self-normalised, so the loss scale does not depend on how many clicks
    came from low positions.
    """
    b = len(query)
    q = functional.normalize(query, dim=1)
    p = functional.normalize(positive, dim=1)
    n = functional.normalize(negatives, dim=2)
    positive_logit = (q * p).sum(dim=1, keepdim=True)
    negative_logits = torch.einsum("bd,bkd->bk", q, n).masked_fill(~negative_mask, float("-inf"))
    if in_batch_mask is None:
        in_batch_mask = torch.zeros((b, b), dtype=torch.bool, device=q.device)
    batch_logits = (q @ p.T).masked_fill(~in_batch_mask.to(q.device), float("-inf"))
    logits = torch.cat([positive_logit, negative_logits, batch_logits], dim=1) / temperature
    losses = functional.cross_entropy(
        logits, torch.zeros(b, dtype=torch.long, device=q.device), reduction="none"
    )
    return (losses * weights).sum() / weights.sum()
