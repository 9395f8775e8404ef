"""Query-side multi-crop: when a search is unsure, search again with windows of the query.

A query that *contains* the image it should find (a screenshot of it in a
bigger window, the image padded, pasted on another picture) embeds as a
mixture of the image and its surroundings, and ranks its source low: on the
project's photo tune split, screenshots (the photo at about half the width of
a larger window with a title bar) were found at rank 1 by 0.35 of queries
with one vector for the whole query. Searching with a few windows of the
query as well and keeping each image's best score found 0.80 with two
central windows, 0.85 with a 3x3 grid of half-size windows (9 passes).

A copy turned by a quarter (a photo shown sideways) embeds far from its
source too, so an unsure query is also searched turned by 90, 180 and 270
degrees (``turns``).

Extra passes are spent only when they can help: when crop verification
confirmed nothing and the best similarity is below ``below`` (on the base
model's scale, translated for a trained model like the near-duplicate
threshold). A confident search (a verified crop, an edit whose source scores
0.8 or more) costs nothing more. And the views' results count only if one of
them beats the whole query's best score by ``margin``: a window that is mostly
a pasted patch of another picture otherwise finds that picture. Chosen on the
photo tune split (60 queries per edit kind, seed 1): centre windows + turns at
margin 0.05 gave patch 0.90, rotate 1.00, screenshot 0.65 (no views: 0.93,
0.90, 0.28; margin 0: 0.85, 1.00, 0.70).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from encoders.preprocess import CropBox, preprocess_image
from index.partition import Hit
from index.rerank import merge_best

WINDOW_SCHEMES = ("none", "centre", "grid")


def window_boxes(scheme: str) -> tuple[CropBox, ...]:
    """The query windows of ``scheme``, relative to the query image."""
    if scheme == "none":
        return ()
    if scheme == "centre":  # the middle 60 % and 80 %: where a shown picture usually sits
        return (
            CropBox(0.2, 0.2, 0.8, 0.8, relative=True),
            CropBox(0.1, 0.15, 0.9, 0.9, relative=True),
        )
    if scheme == "grid":  # half-size windows every quarter: anywhere in the query
        starts = (0.0, 0.25, 0.5)
        return tuple(
            CropBox(left, top, left + 0.5, top + 0.5, relative=True)
            for top in starts
            for left in starts
        )
    raise ValueError(f"unknown query window scheme {scheme!r}; use one of {WINDOW_SCHEMES}")


QUARTER_TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


@dataclass(frozen=True)
class QueryWindows:
    """Which views of an unsure query to search with, and when they count."""

    boxes: tuple[CropBox, ...]
    turns: bool = True
    below: float = 0.75
    margin: float = 0.05

    def wanted(self, hits: Sequence[Hit], verified: int, threshold: float) -> bool:
        """Whether the views can help: nothing verified and the best score low.

        ``threshold`` is :attr:`below` on the serving model's similarity scale.
        """
        return verified == 0 and (not hits or hits[0].score < threshold)

    def views(self, image: Image.Image) -> list[np.ndarray]:
        """Model inputs of the views: each window, then each quarter turn."""
        inputs = [preprocess_image(image, box) for box in self.boxes]
        if self.turns:
            inputs += [preprocess_image(image.transpose(turn)) for turn in QUARTER_TURNS]
        return inputs

    def merge(self, hits: list[Hit], views: Sequence[list[Hit]]) -> list[Hit] | None:
        """Each image's best score over the whole query and its views, or ``None`` (keep
        ``hits``) when no view beats the whole query's best by :attr:`margin`."""
        best = hits[0].score if hits else -1.0
        if not any(found and found[0].score > best + self.margin for found in views):
            return None
        return merge_best([hits, *views])
