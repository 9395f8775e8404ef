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
    assert set(TILE_SCHEMES) == {"none", "quadrants", "thirds"}


def test_thirds_are_a_four_by_four_grid_of_overlapping_third_size_tiles():
    boxes = tile_boxes("thirds")
    assert len(boxes) == 16
    pixel_boxes = [box.to_pixels(900, 450) for box in boxes]
    assert pixel_boxes[0] == (0, 0, 300, 150)
    assert pixel_boxes[3] == (600, 0, 900, 150)  # the last column ends at the edge
    assert pixel_boxes[-1] == (600, 300, 900, 450)
    lefts = sorted({left for left, _, _, _ in pixel_boxes})
    assert lefts == [0, 200, 400, 600]  # stride 2/9: neighbours overlap by a third
    assert all(
        right - left == 300 and bottom - top == 150 for left, top, right, bottom in pixel_boxes
    )
    # every pixel is in some tile
    covered = set()
    for left, top, right, bottom in pixel_boxes:
        covered |= {(x, y) for x in range(left, right, 50) for y in range(top, bottom, 50)}
    assert covered == {(x, y) for x in range(0, 900, 50) for y in range(0, 450, 50)}
