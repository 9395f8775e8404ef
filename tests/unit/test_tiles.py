"""Tile crops for crop queries."""

from __future__ import annotations

import pytest

from encoders.tiles import TILE_SCHEMES, tile_boxes


def test_no_tiles():
    assert tile_boxes("none") == []


def test_quadrants_cover_the_image_and_add_a_centre():
    boxes = tile_boxes("quadrants")
    assert len(boxes) == 5
    pixel_boxes = [box.to_pixels(200, 100) for box in boxes]
    assert pixel_boxes[:4] == [
        (0, 0, 100, 50),
        (100, 0, 200, 50),
        (0, 50, 100, 100),
        (100, 50, 200, 100),
    ]
    assert pixel_boxes[4] == (50, 25, 150, 75)
    assert (
        sum((right - left) * (bottom - top) for left, top, right, bottom in pixel_boxes[:4])
        == 200 * 100
    )


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="unknown tile scheme"):
        tile_boxes("octants")
    assert set(TILE_SCHEMES) == {"none", "quadrants"}
