"""Query-side views of unsure searches: which windows, when they run, how they merge."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from encoders.preprocess import INPUT_SIZE, preprocess_image
from index.partition import Hit
from index.query_windows import QueryWindows, window_boxes


def test_schemes() -> None:
    assert window_boxes("none") == ()
    assert len(window_boxes("centre")) == 2 and len(window_boxes("grid")) == 9
    assert all(box.relative for box in window_boxes("grid"))
    with pytest.raises(ValueError, match="unknown query window scheme"):
        window_boxes("everywhere")


def test_views_are_only_wanted_for_unsure_unverified_searches() -> None:
    views = QueryWindows(window_boxes("centre"))
    assert views.wanted([Hit("a", 0.6)], verified=0, threshold=0.75)
    assert views.wanted([], verified=0, threshold=0.75)
    assert not views.wanted([Hit("a", 0.8)], verified=0, threshold=0.75)
    assert not views.wanted([Hit("a", 1.9)], verified=1, threshold=0.75)


def test_views_are_the_windows_then_the_quarter_turns() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 100, 3), np.uint8))
    inputs = QueryWindows(window_boxes("centre"), turns=True).views(image)
    assert len(inputs) == 2 + 3 and all(x.shape == (3, INPUT_SIZE, INPUT_SIZE) for x in inputs)
    turned = preprocess_image(image.transpose(Image.Transpose.ROTATE_90))
    np.testing.assert_array_equal(inputs[2], turned)
    assert len(QueryWindows(window_boxes("centre"), turns=False).views(image)) == 2


def test_views_count_only_when_one_beats_the_whole_query_by_the_margin() -> None:
    views = QueryWindows((), margin=0.05)
    hits = [Hit("patch-source", 0.62), Hit("true-source", 0.60)]
    close = [[Hit("patch-source", 0.66), Hit("true-source", 0.61)]]
    assert views.merge(hits, close) is None  # 0.66 < 0.62 + 0.05: keep the whole query's
    better = [[Hit("true-source", 0.80), Hit("other", 0.5)]]
    merged = views.merge(hits, better)
    assert merged is not None
    assert [(h.image_id, h.score) for h in merged] == [
        ("true-source", 0.80),
        ("patch-source", 0.62),
        ("other", 0.5),
    ]


def test_the_settings_know_the_same_schemes() -> None:
    """streams.settings mirrors the scheme names (it imports nothing from index/)."""
    from index.query_windows import WINDOW_SCHEMES
    from streams.settings import WINDOW_SCHEMES as SETTINGS_SCHEMES

    assert SETTINGS_SCHEMES == WINDOW_SCHEMES
