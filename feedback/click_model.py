"""Relevance from the interactions log: a position-based click model fitted by EM.

Counting clicks measures exposure as much as relevance: a result shown first
in every session collects clicks whatever it is, and one shown rarely or low
collects few however good it is. The position-based model (PBM; Craswell et
al. 2008, Chuklin et al., *Click Models for Web Search*, ch. 3) separates
the two: a user examines position ``p`` with probability ``theta[p]`` and
clicks an examined result with probability ``gamma[q, d]`` (its
*attractiveness* for the query), independently, so

    P(click on d at p for q) = theta[p] * gamma[q, d].

Neither factor is observed, only clicks and impressions. Expectation
maximisation (Dempster et al. 1977) fits both: for a click, the result was
examined and attractive; for a skip, the posterior of "examined but not
attractive" and of "attractive but not examined" follows from the current
parameters; each parameter is then the mean of its posterior over the
impressions it governs. The reported ``gamma`` is shrunk as by a
Beta(0, ``prior_strength``) prior — that many examined, unclicked
pseudo-impressions — so a result earns its relevance with clicks: one click
on a result shown once does not make it as relevant as one clicked in half
of fifty sessions.

Inputs are impressions as ``(query, result, position, clicked)``; building
them from the log's impression and click events is :func:`impressions_from_events`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from streams.schemas import Interaction

Impression = tuple[str, str, int, bool]  # query image, shown image, position, clicked


@dataclass(frozen=True)
class ClickModelFit:
    """The fitted position-based model."""

    examination: np.ndarray  # theta per position, relative to position 0
    attractiveness: dict[tuple[str, str], float]  # gamma per (query, result)
    impressions: dict[tuple[str, str], int]  # how many impressions each gamma rests on
    iterations: int


@dataclass(frozen=True)
class ImpressionLog:
    """Impressions rebuilt from events, and what could not be matched."""

    impressions: list[Impression]
    clicks_without_impression: int
    searches_without_query: int


def impressions_from_events(events: Iterable[Interaction]) -> ImpressionLog:
    """One impression per (search, position) shown, clicked when the search logged a click
    on that image. Searches by an uploaded image (no query id) cannot be judged: skipped."""
    shown: dict[tuple[str, int], tuple[str, str]] = {}  # (search, position) -> query, image
    clicked: set[tuple[str, str]] = set()  # (search, image)
    no_query: set[str] = set()
    for event in events:
        if not event.query_image_id:
            no_query.add(event.search_id)
        elif event.type == "impression":
            shown[(event.search_id, event.position)] = (
                event.query_image_id,
                event.displayed_image_id,
            )
        elif event.type == "click":
            clicked.add((event.search_id, event.displayed_image_id))
    impressions = [
        (query, image, position, (search, image) in clicked)
        for (search, position), (query, image) in sorted(shown.items())
    ]
    matched = {(search, image) for (search, _), (_, image) in shown.items()}
    return ImpressionLog(impressions, len(clicked - matched), len(no_query))


def fit_position_model(
    impressions: Sequence[Impression],
    iterations: int = 2000,
    tolerance: float = 1e-6,
    prior_strength: float = 1.0,
) -> ClickModelFit:
    """EM for the PBM (see the module docstring), vectorised over (result, position) cells.

    The parameters are fitted by maximum likelihood, and only the reported
    attractiveness is shrunk by the prior, in one last step: a prior inside
    the iterations drags rarely shown results' attractiveness to 0, and the
    examination of the low positions they are shown at rises to explain
    their clicks (measured on 22,000 simulated sessions: position 9's
    examination 0.54 with the prior inside, 0.29 without, 0.23 true).
    """
    if not impressions:
        raise ValueError("no impressions to fit a click model to")
    index: dict[tuple[str, str], int] = {}
    pair_of = np.array([index.setdefault((q, d), len(index)) for q, d, _, _ in impressions])
    position_of = np.array([p for _, _, p, _ in impressions])
    if position_of.min() < 0:
        raise ValueError("positions must be >= 0")
    # Impressions of one result at one position share their posteriors: iterate over
    # those cells with their counts (tens of times fewer than impressions).
    cells, cell_of = np.unique(pair_of * (position_of.max() + 1) + position_of, return_inverse=True)
    pair, position = np.divmod(cells, position_of.max() + 1)
    shown = np.bincount(cell_of).astype(np.float64)
    clicks = np.bincount(
        cell_of, np.array([c for *_, c in impressions], dtype=np.float64), len(cells)
    )
    per_pair = np.bincount(pair, shown, len(index))
    per_position = np.bincount(position, shown)
    seen = per_position > 0
    # Start from click-through rates: examination ~ CTR by position relative to the
    # top, attractiveness ~ clicks per expected examination. EM then needs far fewer
    # iterations than from a flat start.
    ctr = np.bincount(position, clicks) / np.maximum(per_position, 1)
    theta = np.clip(ctr / max(ctr.max(), 1e-12), 0.01, 1.0)
    expected = np.bincount(pair, shown * theta[position], len(index))
    gamma = np.clip(np.bincount(pair, clicks, len(index)) / expected, 0.01, 0.99)
    done = 0
    for done in range(1, iterations + 1):  # noqa: B007 - the count is reported
        examined, attractive = _posteriors(theta[position], gamma[pair], shown, clicks)
        new_theta = theta.copy()
        new_theta[seen] = np.bincount(position, examined)[seen] / per_position[seen]
        new_gamma = np.bincount(pair, attractive, len(index)) / per_pair
        change = max(np.abs(new_theta - theta).max(), np.abs(new_gamma - gamma).max())
        theta, gamma = new_theta, new_gamma
        if change < tolerance:
            break
    _, attractive = _posteriors(theta[position], gamma[pair], shown, clicks)
    shrunk = np.bincount(pair, attractive, len(index)) / (per_pair + prior_strength)
    # Only theta * gamma is identified: report examination relative to the top position.
    top = theta[0] if theta[0] > 0 else 1.0
    keys = list(index)
    return ClickModelFit(
        examination=theta / top,
        attractiveness={key: float(shrunk[i] * top) for i, key in enumerate(keys)},
        impressions={key: int(per_pair[i]) for i, key in enumerate(keys)},
        iterations=done,
    )


def _posteriors(
    theta: np.ndarray, gamma: np.ndarray, shown: np.ndarray, clicks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the expected number of its impressions examined and attractive.

    A click was both; a skip was examined-but-unattractive with probability
    ``theta (1 - gamma) / (1 - theta gamma)`` and attractive-but-unexamined with
    ``(1 - theta) gamma / (1 - theta gamma)``.
    """
    skipped = np.maximum(1.0 - theta * gamma, 1e-12)
    skips = shown - clicks
    examined = clicks + skips * theta * (1 - gamma) / skipped
    attractive = clicks + skips * (1 - theta) * gamma / skipped
    return examined, attractive


def graded_relevance(
    fit: ClickModelFit,
    max_grade: int = 5,
    reference_quantile: float = 0.95,
    min_impressions: int = 10,
) -> tuple[dict[str, dict[str, int]], float]:
    """Grades ``0..max_grade``, linear in attractiveness; also the attractiveness graded top.

    The top grade goes to results at least as attractive as the
    ``reference_quantile`` of those resting on ``min_impressions`` or more
    (all results when none does): real attractiveness rarely reaches 1, and
    a grade scale pinned to 1 would leave the upper grades empty. Only
    grades above 0 are returned (qrels list what is relevant).
    """
    solid = [g for key, g in fit.attractiveness.items() if fit.impressions[key] >= min_impressions]
    reference = float(np.quantile(solid or list(fit.attractiveness.values()), reference_quantile))
    grades: dict[str, dict[str, int]] = {}
    for (query, result), gamma in fit.attractiveness.items():
        grade = min(max_grade, round(max_grade * gamma / reference)) if reference > 0 else 0
        if grade > 0 and query != result:
            grades.setdefault(query, {})[result] = grade
    return grades, reference
