"""The position-based click model: recovers what the simulator's users do, apart from exposure."""

import random

import numpy as np
import pytest

from feedback.click_model import (
    fit_position_model,
    graded_relevance,
    impressions_from_events,
)
from feedback.simulate import ClickModel, session_events
from streams.schemas import Interaction

RELEVANT = {f"r{i}" for i in range(6)}
IRRELEVANT = {f"x{i}" for i in range(6)}


def _events(sessions: int, seed: int = 0) -> list[Interaction]:
    """Simulated sessions over one query whose 12 results are shuffled every time, so that
    position and relevance are independent and both can be read back."""
    rng = random.Random(seed)
    events = []
    for number in range(sessions):
        results = sorted(RELEVANT | IRRELEVANT)
        rng.shuffle(results)
        response = {"search_id": f"s{number}", "results": [{"image_id": i} for i in results]}
        raw = session_events(rng, ClickModel(), "u", "q", response, 1000.0 + number,
                             lambda _q, d: d in RELEVANT)  # fmt: skip
        events.extend(Interaction(**event) for event in raw)
    return events


def test_em_recovers_examination_and_attractiveness() -> None:
    log = impressions_from_events(_events(3000))
    fit = fit_position_model(log.impressions)
    expected = ClickModel().examine_decay ** np.arange(12)
    assert np.abs(fit.examination - expected).max() < 0.08
    relevant = [fit.attractiveness[("q", d)] for d in RELEVANT]
    irrelevant = [fit.attractiveness[("q", d)] for d in IRRELEVANT]
    assert min(relevant) == pytest.approx(0.5, abs=0.08)
    assert max(irrelevant) == pytest.approx(0.04, abs=0.04)
    grades, _ = graded_relevance(fit)
    assert min(grades["q"][d] for d in RELEVANT) >= 4
    assert max(grades["q"].get(d, 0) for d in IRRELEVANT) <= 1


def test_exposure_does_not_buy_relevance() -> None:
    """An irrelevant image shown first collects more clicks than a relevant one shown last;
    counting clicks ranks them the wrong way round, the click model does not. Fillers shown
    at every position tie the positions' examination together."""
    rng = random.Random(1)
    attractiveness = {"top-irrelevant": 0.2, "low-relevant": 0.45}
    attractiveness.update({f"f{i}": 0.3 for i in range(30)})
    impressions = []
    for _ in range(3000):
        shown = [f"f{rng.randrange(30)}" for _ in range(10)]
        if rng.random() < 0.7:
            shown[0] = "top-irrelevant"
        if rng.random() < 0.7:
            shown[9] = "low-relevant"
        for position, image in enumerate(shown):
            click = rng.random() < 0.9**position * attractiveness[image]
            impressions.append(("q", image, position, click))
    clicks = {d: sum(c for _, image, _, c in impressions if image == d)
              for d in ("top-irrelevant", "low-relevant")}  # fmt: skip
    assert clicks["top-irrelevant"] > clicks["low-relevant"]
    fit = fit_position_model(impressions)
    assert fit.attractiveness[("q", "low-relevant")] == pytest.approx(0.45, abs=0.05)
    assert fit.attractiveness[("q", "top-irrelevant")] == pytest.approx(0.2, abs=0.05)


def test_one_skip_earns_nothing_and_one_click_earns_a_grade() -> None:
    impressions = [("q", "seen-once", 5, False), ("q", "clicked-once", 7, True)]
    impressions += [("q", f"d{i}", i % 5, i % 3 == 0) for i in range(60)]
    fit = fit_position_model(impressions)
    grades, reference = graded_relevance(fit)
    assert reference > 0
    assert "seen-once" not in grades["q"]
    assert grades["q"]["clicked-once"] >= 1


def test_events_become_impressions_with_their_clicks() -> None:
    def event(kind: str, search: str, image: str, position: int, query: str = "q") -> Interaction:
        return Interaction(event_id=f"{search}-{kind}-{position}", user_id="u", search_id=search,
                           query_image_id=query, displayed_image_id=image, position=position,
                           type=kind, timestamp=1.0)  # fmt: skip

    log = impressions_from_events([
        event("impression", "s1", "a", 0), event("impression", "s1", "b", 1),
        event("click", "s1", "b", 1), event("dwell", "s1", "b", 1),
        event("click", "s1", "never-shown", 4),
        event("impression", "s2", "a", 0, query=""),  # a search by an uploaded image
    ])  # fmt: skip
    assert log.impressions == [("q", "a", 0, False), ("q", "b", 1, True)]
    assert log.clicks_without_impression == 1
    assert log.searches_without_query == 1


def test_nothing_to_fit_is_an_error() -> None:
    with pytest.raises(ValueError, match="no impressions"):
        fit_position_model([])
