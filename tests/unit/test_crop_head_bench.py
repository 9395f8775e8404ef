"""bench/crop_head.py's choice of the positive tile for a training crop."""

from __future__ import annotations

from bench.crop_head import covering_tile
from encoders.preprocess import CropBox
from encoders.tiles import tile_boxes


def test_the_positive_is_the_tile_holding_most_of_the_crop():
    tiles = tile_boxes("thirds")  # 300x300 tiles of a 900x900 image, stride 200
    assert covering_tile(CropBox(10, 10, 60, 60), (900, 900), tiles) == 0
    assert covering_tile(CropBox(850, 850, 890, 890), (900, 900), tiles) == 15
    # 620-700 lies in the third column (400-700) and the fourth (600-900) alike,
    # but 100-180 only in the first row: the first of the equals wins.
    assert covering_tile(CropBox(620, 100, 700, 180), (900, 900), tiles) == 2
    # mostly in the second column and second row
    assert covering_tile(CropBox(210, 210, 390, 390), (900, 900), tiles) == 5
