"""Tile crops indexed beside each image's global vector, for crop queries.

A crop query of a small part of an image looks little like the whole image,
but much like the tile that contains it. Each tile is embedded with its own
pass through the encoder and indexed as extra rows of its image; search takes
the max over an image's rows.

Measured on Tux Paint hard crops (3-15 % of the area, JPEG 70; bench/crop_tiles.py):
recall@1 0.122 global-only, 0.312 with "quadrants" (6 passes, 15 img/s in
torch eager), while regions pooled from one pass's 7x7 or 14x14 feature map
reached only 0.13-0.25. With the int8 ONNX encoder on 798 such crops: global
0.113, "quadrants" 0.333, "thirds" 0.495 (17 passes); denser sets flatten out
(25 third-size tiles 0.529, 49 quarter-size 0.545, 84 tiles of three sizes
0.585), so past "thirds" the encoder, not the tiling, limits crop recall;
pixel verification of the top hits (index/crop_verify.py) takes "thirds" to 0.85.
Tiles cost ingest throughput in proportion to their count, which is why they
are a setting (``VISEARCH_TILES``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from encoders.preprocess import CropBox, preprocess_image

TILE_SCHEMES = ("none", "quadrants", "thirds")
THIRDS_GRID = 4  # tiles per row and column; a third of the side each, overlapping


def tile_boxes(scheme: str) -> list[CropBox]:
    """The tile crops of ``scheme``, relative to the oriented image."""
    if scheme == "none":
        return []
    if scheme == "quadrants":
        return [
            CropBox(0.0, 0.0, 0.5, 0.5, relative=True),
            CropBox(0.5, 0.0, 1.0, 0.5, relative=True),
            CropBox(0.0, 0.5, 0.5, 1.0, relative=True),
            CropBox(0.5, 0.5, 1.0, 1.0, relative=True),
            CropBox(0.25, 0.25, 0.75, 0.75, relative=True),
        ]
    if scheme == "thirds":
        side, stride = 1 / 3, (1 - 1 / 3) / (THIRDS_GRID - 1)
        starts = [n * stride for n in range(THIRDS_GRID)]
        return [
            CropBox(left, top, min(1.0, left + side), min(1.0, top + side), relative=True)
            for top in starts
            for left in starts
        ]
    raise ValueError(f"unknown tile scheme {scheme!r}; use one of {TILE_SCHEMES}")


def image_inputs(image: Image.Image, tiles: Sequence[CropBox] = ()) -> list[np.ndarray]:
    """Model inputs of one indexed image: the whole image first, then each tile.

    The order is the index's row order (global vector, then tiles). One function
    so that the embedding agent and ``visearch eval`` index images identically.
    """
    return [preprocess_image(image, box) for box in (None, *tiles)]
