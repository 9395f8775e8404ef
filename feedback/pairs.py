"""Labelled pairs from one search session: clicked results against what was skipped.

A session is everything logged under one ``search_id``: the results shown
(impressions, with their positions) and the results clicked. When it closes,
each click becomes one :class:`~streams.schemas.LabeledPair`:

- positive: the clicked image, with the query image;
- negatives: every result shown *above* the click and not clicked (the user
  saw it and skipped it: the strongest negative signal), plus up to
  ``sampled_negatives`` results shown below the click and not clicked, drawn
  with a generator seeded by the pair id so a replay draws the same ones;
- weight: inverse propensity of the click's position. Users click the top
  result far more often whatever it is; a click at position 5 says more about
  relevance than a click at position 0. The weight is
  ``CTR(position 0) / CTR(position bucket)``, from the click-through rates
  observed so far, clipped to ``[1, max_weight]`` and 1 until both rates rest
  on at least ``min_impressions`` impressions.

Sessions of searches by an uploaded image (no query image id) give no pairs:
a trainer cannot look the query up.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.schemas import LabeledPair


@dataclass
class Session:
    """What one search showed and what was clicked, as events arrive."""

    search_id: str
    user_id: str
    query_image_id: str
    model_version: str
    last_seen: float
    shown: dict[int, str] = field(default_factory=dict)  # position -> image id
    clicked: dict[str, int] = field(default_factory=dict)  # image id -> first click position

    def to_json(self) -> dict[str, Any]:
        return {
            "search_id": self.search_id,
            "user_id": self.user_id,
            "query_image_id": self.query_image_id,
            "model_version": self.model_version,
            "last_seen": self.last_seen,
            "shown": {str(pos): image for pos, image in self.shown.items()},
            "clicked": self.clicked,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        return cls(
            search_id=data["search_id"],
            user_id=data["user_id"],
            query_image_id=data["query_image_id"],
            model_version=data["model_version"],
            last_seen=float(data["last_seen"]),
            shown={int(pos): image for pos, image in data["shown"].items()},
            clicked={image: int(pos) for image, pos in data["clicked"].items()},
        )


@dataclass(frozen=True)
class PairPolicy:
    """How pairs are drawn from a session and weighted."""

    sampled_negatives: int = 5
    max_weight: float = 10.0
    min_impressions: int = 100


def propensity_weight(
    position_ctr: Callable[[int], tuple[int, int]], position: int, policy: PairPolicy
) -> float:
    """``CTR(0) / CTR(position)`` clipped to ``[1, max_weight]``; 1 without enough data.

    ``position_ctr(p)`` returns ``(impressions, clicks)`` of ``p``'s bucket.
    """
    top_shown, top_clicked = position_ctr(0)
    shown, clicked = position_ctr(position)
    if min(top_shown, shown) < policy.min_impressions or clicked == 0 or top_clicked == 0:
        return 1.0
    ratio = (top_clicked / top_shown) / (clicked / shown)
    return float(min(policy.max_weight, max(1.0, ratio)))


def session_pairs(
    session: Session,
    closed_at: float,
    position_ctr: Callable[[int], tuple[int, int]],
    policy: PairPolicy,
) -> list[LabeledPair]:
    """One pair per clicked image, in click-position order."""
    if not session.query_image_id:
        return []
    clicked = set(session.clicked)
    pairs = []
    for image_id, position in sorted(session.clicked.items(), key=lambda item: item[1]):
        if image_id == session.query_image_id:
            continue  # the query itself is never a useful positive
        skipped_above = [
            session.shown[p]
            for p in sorted(session.shown)
            if p < position and session.shown[p] not in clicked
        ]
        below = [
            session.shown[p]
            for p in sorted(session.shown)
            if p > position and session.shown[p] not in clicked
        ]
        pair_id = f"{session.search_id}:{position}"
        sampled = random.Random(pair_id).sample(below, min(policy.sampled_negatives, len(below)))
        pairs.append(
            LabeledPair(
                pair_id=pair_id,
                search_id=session.search_id,
                query_image_id=session.query_image_id,
                positive_image_id=image_id,
                position=position,
                weight=propensity_weight(position_ctr, position, policy),
                model_version=session.model_version,
                created_at=closed_at,
                negative_image_ids=skipped_above + sampled,
            )
        )
    return pairs
