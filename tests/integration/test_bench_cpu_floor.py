"""bench.cpu_budget's search floor: the inputs a search embedded, on the real encoder."""

from __future__ import annotations

import pytest

from bench.cpu_budget import search_floor_ms
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images

pytestmark = pytest.mark.integration


def test_the_floor_of_an_unsure_search_counts_its_views() -> None:
    """Six inputs (the query and its 5 views) cost the floor several passes more than
    one, and a count the settings' views cannot make is refused, not averaged in."""
    settings = Settings()  # the defaults: 2 windows and 3 quarter turns
    photos = find_images(DEMO_CORPUS)[:4]
    sure, _ = search_floor_ms(settings, [(p, 1) for p in photos], 500, crop=False)
    unsure, scan = search_floor_ms(settings, [(p, 6) for p in photos], 500, crop=False)
    assert 0 < scan < sure
    assert unsure > 2.5 * sure  # measured 5.7-6.1x (fp32 model, one intra-op thread, 2 vCPUs)
    with pytest.raises(AssertionError):
        search_floor_ms(settings, [(photos[0], 4)], 500, crop=False)
