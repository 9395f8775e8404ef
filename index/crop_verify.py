"""Pixel verification of crop queries: is the query a piece of this candidate image?

Embeddings find the *neighbourhood* of a crop's source: on Tux Paint hard
crops (3-15 % of the area, JPEG 70) the source is in the top 50 for 90 % of
queries with "thirds" tiles, but first for only half of them, behind images
that merely look alike. A crop is a copy of some of the source's pixels, so
the source can be recognised exactly: slide the query over each of the top
candidates and take the best normalised cross-correlation (OpenCV's
``TM_CCOEFF_NORMED``: robust to JPEG noise, brightness and contrast).
Candidates whose best match reaches ``min_score`` move to the front, best
match first; the others keep their order. A query that is not a crop of any
candidate (a whole photo, a look-alike) matches nothing and its ranking is
left as it was. A template under ``MIN_TEMPLATE_AREA`` of the candidate is
not counted. On the 798 Tux Paint hard crops with "thirds" tiles, verifying
the top 50 lifts recall@1 from 0.49 to 0.85 (top 100: 0.88; docs/evaluation.md).

Copies with a pasted patch. One correlation over the whole template fails
when part of the copy was replaced (another photo's patch over 10-30 % of it,
a caption, a sticker): the rest is pixel-identical, but the foreign part pulls
the correlation below ``min_score``. So a template covering at least
``BLOCK_MIN_AREA`` of the candidate is also scored block by block at its best
position (a ``BLOCK_GRID`` x ``BLOCK_GRID`` grid): its *block agreement* is
the correlation that ``BLOCK_SHARE`` of the blocks reach (flat blocks count as
no agreement), and its match is the larger of the two. On the real-photo tune
sets (docs/evaluation.md) 72 of 75 patched copies reach 0.9 this way, and of
the 19,189 other (query, candidate) pairs with templates that large the
highest agreement is 0.75: no unrelated image is verified by it.

Scale. The query is compared at the candidate's own resolution: both are
brought to the pixel units of their original files (a JPEG may be decoded at
a reduced scale) and the candidate to at most ``VERIFY_SIDE`` pixels a side.
``scales`` > 1 also tries that many sizes between 1/1.5x and 1.5x of it, for
crops that were rescaled after cutting (a screenshot). Measured in docs/evaluation.md
(crop search): more sizes find more rescaled crops but also more false
matches, and cost in proportion.

Candidates' pixels are cached as small greyscale thumbnails (LRU, keyed by
id and file modification time, so a re-upload is never compared stale). The
verifier only reorders hits it is given: private, deleted and flagged images
were filtered before it, and it adds none.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from encoders.preprocess import (
    ACCEPTED_FORMATS,
    EXIF_ORIENTATION,
    SWAPPED_ORIENTATIONS,
    CropBox,
    ImageLimits,
    PreprocessError,
    crop_image,
    decode_image,
    original_size,
)
from index.partition import Hit

VERIFY_SIDE = 256  # longest side of a candidate's thumbnail
CACHE_SIZE = 2048  # candidate thumbnails kept (uint8, at most 64 KB each: <= 128 MiB)
# Candidates' oriented sizes kept (~200 bytes each: <= 13 MiB). Reading a size is
# cheap for a JPEG, but a PNG's EXIF may follow its pixels, so Pillow decodes the
# whole file to find its orientation: ~1 ms for a Tux Paint stamp, paid for every
# candidate of every whole-photo query (77 ms of 100 candidates) before this cache.
SIZE_CACHE_SIZE = 65536
# A larger query is reduced once, first: every template is at most a thumbnail's side
# (it must fit inside one), so detail beyond twice that is never compared, and
# resizing a 1024 px query for each of 100 candidates was most of the verification.
MAX_QUERY_SIDE = 2 * VERIFY_SIDE
MATCH_TIE = 0.001  # matches closer than this are a tie, broken by the embedding's rank
MIN_TEMPLATE_SIDE = 6  # below this a template matches anything
# A template covering less of the candidate than this is too little evidence:
# a 9 px edge matches somewhere in any large picture (measured on the hard
# crops, docs/evaluation.md: guard off 0.848 recall@1, 1 % 0.858, 2 % 0.861).
MIN_TEMPLATE_AREA = 0.02
MAX_SCALE_RATIO = 1.5
BLOCK_MIN_AREA = 0.25  # templates this large are whole-image copies, scored block by block too
BLOCK_GRID = 6  # blocks per side: a 256 px thumbnail gives ~42 px blocks
BLOCK_SHARE = 0.35  # the share of blocks that must agree (a patch may cover 30 % and touch more)
MIN_BLOCK_SIDE = 8
FLAT_BLOCK_STD = 4.0  # grey levels: below this a block's correlation means nothing
# A patched copy keeps most of its pixels, so its whole correlation stays well above
# this (lowest of the 75 patched copies on the tune sets: 0.275), while ~70 % of
# unrelated candidates fall below it and skip the block scoring (~0.3 ms each).
BLOCK_GATE = 0.2
COARSE_GATE = 0.7  # a template's half-size correlation below this: no full-size search
COARSE_MARGIN = 3  # full-size pixels searched around the best half-size place

Box = tuple[int, int, int, int]  # top, left, bottom, right


@dataclass(frozen=True)
class Pixels:
    """Greyscale pixels and their scale: decoded pixels per pixel of the original file."""

    grey: np.ndarray  # (h, w) float32; uint8 for cached candidates (a quarter of the memory)
    scale: float


def oriented_size(source: Path) -> tuple[int, int]:
    """Width and height of the oriented original, from the header alone (no decoding)."""
    with Image.open(source, formats=ACCEPTED_FORMATS) as opened:
        width, height = opened.size
        try:
            orientation = opened.getexif().get(EXIF_ORIENTATION)
        except Exception:  # broken EXIF: decode_image kept the pixels as stored too
            orientation = None
    return (height, width) if orientation in SWAPPED_ORIENTATIONS else (width, height)


def to_pixels(image: Image.Image, scale: float, max_side: int) -> Pixels:
    """``image`` as greyscale of at most ``max_side`` a side; ``scale`` is its own
    (decoded pixels per original pixel) before that reduction."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    longest = max(grey.shape)
    if longest > max_side:
        factor = max_side / longest
        size = (max(1, round(grey.shape[1] * factor)), max(1, round(grey.shape[0] * factor)))
        grey = np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), np.float32)
        scale *= factor
    return Pixels(grey, scale)


def decoded_scale(image: Image.Image) -> float:
    """Decoded pixels per pixel of the original (large images are decoded reduced)."""
    return image.width / max(1, original_size(image)[0])


def query_pixels(image: Image.Image, crop: CropBox | None = None) -> Pixels:
    """The query as the verifier compares it; ``image`` is the decoded query, before ``crop``."""
    return to_pixels(crop_image(image, crop), decoded_scale(image), MAX_QUERY_SIDE)


def template_fits(
    template: tuple[float, float], candidate: tuple[float, float], slack: float = 1.0
) -> bool:
    """Whether a (width, height) template lies inside the candidate and covers at least
    ``MIN_TEMPLATE_AREA`` of it; ``slack`` allows for rounding between pixel units."""
    (w, h), (width, height) = template, candidate
    return (
        w <= width * slack
        and h <= height * slack
        and w * h * slack >= MIN_TEMPLATE_AREA * width * height
    )


def best_match(
    query: Pixels,
    candidate: Pixels,
    multipliers: Sequence[float],
    templates: QueryTemplates | None = None,
) -> float:
    """Best normalised cross-correlation of ``query`` inside ``candidate``; -1 when none fits.

    ``templates``: the query's resized templates, shared by the candidates of one
    query (made here when not given).
    """
    templates = templates if templates is not None else QueryTemplates(query)
    height, width = candidate.grey.shape
    half: np.ndarray | None = None
    best = -1.0
    for multiplier in multipliers:
        factor = multiplier * candidate.scale / query.scale
        size = (round(query.grey.shape[1] * factor), round(query.grey.shape[0] * factor))
        if min(size) < MIN_TEMPLATE_SIDE or not template_fits(size, (width, height)):
            continue
        shrink = factor < 1
        template = templates.full(size, shrink)
        if template is None:  # flat: correlation is undefined
            continue
        box: Box = (0, 0, height, width)
        if min(size) >= 2 * MIN_TEMPLATE_SIDE and (size[0] < width or size[1] < height):
            # Halved here: keeping a float half with the cached thumbnail saved nothing
            # (converting float16 back cost 27 us, halving the uint8 grey 13 us, measured)
            half = half if half is not None else halve(candidate.grey.astype(np.float32))
            coarse, near = coarse_box(
                half, templates.half(size, shrink), template.shape, (height, width)
            )
            if near is None:  # no place at half size comes close: no place at full size will
                best = max(best, coarse)
                continue
            box = near
        best = max(best, match_in(candidate.grey, box, template))
    return best


class QueryTemplates:
    """The query resized to each size it is compared at, made once per size.

    The candidates of a query come in few sizes (a corpus's images come from few
    cameras and apps, and every thumbnail is ``VERIFY_SIDE`` a side), so the
    query is resized once per size and shrinking factor, not once per candidate:
    a whole-photo query against 100 candidates made ~3 resizes and 2 standard
    deviations a candidate, a third of its verification time (measured). The
    result of a resize depends only on the target size and the interpolation,
    so a shared template is the one the candidate would have made.
    """

    def __init__(self, query: Pixels) -> None:
        self.query = query
        self._full: dict[tuple[tuple[int, int], bool], np.ndarray | None] = {}
        self._half: dict[tuple[tuple[int, int], bool], np.ndarray | None] = {}

    def full(self, size: tuple[int, int], shrink: bool) -> np.ndarray | None:
        """The query at ``size`` (width, height); ``None`` when it is flat."""
        key = (size, shrink)
        if key not in self._full:
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            template = cv2.resize(self.query.grey, size, interpolation=interpolation)
            self._full[key] = None if float(template.std()) < 1.0 else template
        return self._full[key]

    def half(self, size: tuple[int, int], shrink: bool) -> np.ndarray | None:
        """:meth:`full`'s template at half size; ``None`` when flat there (or at full size)."""
        key = (size, shrink)
        if key not in self._half:
            template = self.full(size, shrink)
            small = (
                None
                if template is None
                else cv2.resize(
                    template, (size[0] // 2, size[1] // 2), interpolation=cv2.INTER_AREA
                )
            )
            self._half[key] = None if small is None or small.std() < 1.0 else small
        return self._half[key]


def halve(grey: np.ndarray) -> np.ndarray:
    return cv2.resize(grey, (grey.shape[1] // 2, grey.shape[0] // 2), interpolation=cv2.INTER_AREA)


def coarse_box(
    half: np.ndarray,
    small: np.ndarray | None,
    template_shape: tuple[int, ...],
    shape: tuple[int, ...],
) -> tuple[float, Box | None]:
    """The best place at half size of a template of ``template_shape`` (``small``: the
    template halved, ``None`` when flat there): its correlation there, and the box of
    the full-size candidate (of ``shape``; ``half`` is it halved) to search,
    ``COARSE_MARGIN`` px around it; ``None`` when the half-size correlation is under
    ``COARSE_GATE``.

    Coarse to fine: matching at half size costs about a quarter, and a full-size
    search of a few pixels around the best half-size place finds the same match.
    On the tune sets' 16,824 (query, candidate) pairs this verified exactly the
    pairs the full search verified (gates 0.6 and 0.75; 0.85 lost 2 of them) in
    half the time.
    """
    if small is None or small.shape[0] > half.shape[0] or small.shape[1] > half.shape[1]:
        return -1.0, (0, 0, shape[0], shape[1])  # no half-size answer: search it all
    _, coarse, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(half, small, cv2.TM_CCOEFF_NORMED))
    if coarse < COARSE_GATE:
        return float(coarse), None
    h, w = template_shape
    return float(coarse), (
        max(0, 2 * y - COARSE_MARGIN),
        max(0, 2 * x - COARSE_MARGIN),
        min(shape[0], 2 * y + h + COARSE_MARGIN + 1),
        min(shape[1], 2 * x + w + COARSE_MARGIN + 1),
    )


def match_in(grey: np.ndarray, box: Box, template: np.ndarray) -> float:
    """The template's best correlation inside ``box`` of the candidate's ``grey``, or
    its block agreement there when larger (a template covering much of the candidate)."""
    top, left, bottom, right = box
    # Only the searched region is made float (a cached thumbnail is uint8)
    searched = grey[top:bottom, left:right].astype(np.float32, copy=False)
    scores = cv2.matchTemplate(searched, template, cv2.TM_CCOEFF_NORMED)
    _, whole, _, (x, y) = cv2.minMaxLoc(scores)
    h, w = template.shape
    if whole < BLOCK_GATE or w * h < BLOCK_MIN_AREA * grey.shape[0] * grey.shape[1]:
        return float(whole)
    region = searched[y : y + h, x : x + w]
    return max(float(whole), block_agreement(template, region))


def block_agreement(template: np.ndarray, region: np.ndarray) -> float:
    """The correlation that ``BLOCK_SHARE`` of the blocks of ``template`` reach against
    the same blocks of ``region`` (same shape); -1 when the blocks are too small.

    Vectorised over the grid (the edges beyond a whole number of blocks are left
    out): ~0.1 ms for a 256 px thumbnail, a loop over the blocks ~2 ms.
    """
    side_h, side_w = template.shape[0] // BLOCK_GRID, template.shape[1] // BLOCK_GRID
    if min(side_h, side_w) < MIN_BLOCK_SIDE:
        return -1.0
    shape = (BLOCK_GRID, side_h, BLOCK_GRID, side_w)
    crop = (slice(0, BLOCK_GRID * side_h), slice(0, BLOCK_GRID * side_w))
    a = template[crop].reshape(shape).astype(np.float32)
    b = region[crop].reshape(shape).astype(np.float32)
    a -= a.mean(axis=(1, 3), keepdims=True)
    b -= b.mean(axis=(1, 3), keepdims=True)
    energy_a, energy_b = (a * a).sum(axis=(1, 3)), (b * b).sum(axis=(1, 3))
    pixels = side_h * side_w
    textured = (energy_a > FLAT_BLOCK_STD**2 * pixels) & (energy_b > FLAT_BLOCK_STD**2 * pixels)
    correlation = np.where(
        textured, (a * b).sum(axis=(1, 3)) / np.sqrt(np.maximum(energy_a * energy_b, 1e-12)), -1.0
    )
    return float(np.quantile(correlation, 1.0 - BLOCK_SHARE))


class QueryVerification:
    """One query's verification step in the search path, and what it did."""

    def __init__(self, verifier: CropVerifier, query: Pixels) -> None:
        self.verifier = verifier
        self.query = query
        self.verified = 0  # hits confirmed in the last pass
        self.seconds = 0.0  # over every pass (the search may fetch again)
        # Matches already computed: a search that fetches again (too few results
        # left after the collapse) sees the same top candidates a second time.
        self.matches: dict[str, float] = {}
        self.templates = QueryTemplates(query)

    @property
    def top(self) -> int:
        """How many candidates it checks: the search fetches at least that many."""
        return self.verifier.top

    def __call__(self, candidates: list[Hit]) -> list[Hit]:
        started = time.perf_counter()
        reranked, self.verified = self.verifier.rerank(
            self.query, candidates, self.matches, self.templates
        )
        self.seconds += time.perf_counter() - started
        return reranked


class CropVerifier:
    """Re-ranks the top hits of a query by how well the query matches their pixels."""

    def __init__(
        self,
        path_of: Callable[[str], Path],
        top: int = 50,
        min_score: float = 0.9,
        scales: int = 1,
        limits: ImageLimits | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        if top < 1 or scales < 1 or not -1.0 <= min_score <= 1.0:
            raise ValueError("top and scales must be >= 1 and min_score in [-1, 1]")
        self.path_of = path_of
        self.top = top
        self.min_score = min_score
        self.multipliers = (
            [1.0]
            if scales == 1
            else sorted({1.0, *np.geomspace(1 / MAX_SCALE_RATIO, MAX_SCALE_RATIO, scales)})
        )
        self.limits = limits or ImageLimits()
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], Pixels] = OrderedDict()
        self._sizes: OrderedDict[tuple[str, int], tuple[int, int] | None] = OrderedDict()
        self._lock = threading.Lock()

    def rerank(
        self,
        query: Pixels,
        hits: list[Hit],
        matches: dict[str, float] | None = None,
        templates: QueryTemplates | None = None,
    ) -> tuple[list[Hit], int]:
        """``hits`` with verified candidates first; also how many were verified.

        ``matches`` (image id -> match) is read and filled when given: the
        query's matches from an earlier pass are not computed again.
        ``templates``: the query's resized templates, kept between passes.

        Verified candidates are ordered by their match, to ``MATCH_TIE``, then
        by their original rank: a tiny template (a 19 px tile) can match a large
        unrelated image almost as perfectly as its source, and the embedding
        knows better then. A verified hit's score becomes ``1 + match`` (above
        any cosine similarity), so that scores still decrease down the list:
        clients and TREC tools that sort by score see the verified order.
        """
        head, tail = hits[: self.top], hits[self.top :]
        known = {} if matches is None else matches
        templates = templates if templates is not None else QueryTemplates(query)
        for hit in head:
            if hit.image_id not in known:
                known[hit.image_id] = self._score(query, hit.image_id, templates)
        scores = [known[hit.image_id] for hit in head]
        verified = sorted(
            (i for i, match in enumerate(scores) if match >= self.min_score),
            key=lambda i: (-round(scores[i] / MATCH_TIE), i),
        )
        chosen = set(verified)
        promoted = [replace(head[i], score=1.0 + scores[i]) for i in verified]
        for rank in range(1, len(promoted)):  # keep scores non-increasing after tie-breaks
            if promoted[rank].score > promoted[rank - 1].score:
                promoted[rank] = replace(promoted[rank], score=promoted[rank - 1].score)
        rest = [hit for i, hit in enumerate(head) if i not in chosen]
        return promoted + rest + tail, len(verified)

    def _score(self, query: Pixels, image_id: str, templates: QueryTemplates) -> float:
        try:
            path = self.path_of(image_id)
            key = (image_id, path.stat().st_mtime_ns)
        except (KeyError, OSError):
            return -1.0
        with self._lock:
            candidate = self._cache.get(key)
            if candidate is not None:
                self._cache.move_to_end(key)
        if candidate is None:
            if not self._could_fit(query, path, key):  # decode nothing that cannot match
                return -1.0
            candidate = self._load(path, key)
        if candidate is None:
            return -1.0
        return best_match(query, candidate, self.multipliers, templates)

    def _could_fit(self, query: Pixels, path: Path, key: tuple[str, int]) -> bool:
        """Whether the query, at some tried scale, fits the candidate within the area guard:
        read from the file's header, in original pixels. A whole-image query decodes only
        candidates larger than itself (none of its own size)."""
        size = self._oriented_size(path, key)
        if size is None:
            return False
        width, height = size
        query_w, query_h = query.grey.shape[1] / query.scale, query.grey.shape[0] / query.scale
        return any(
            # 2 % slack: rounding between original, decoded and thumbnail pixels
            template_fits((query_w * m, query_h * m), (width, height), slack=1.02)
            for m in self.multipliers
        )

    def _oriented_size(self, path: Path, key: tuple[str, int]) -> tuple[int, int] | None:
        """The candidate's :func:`oriented_size`, cached; ``None`` when unreadable."""
        with self._lock:
            if key in self._sizes:
                self._sizes.move_to_end(key)
                return self._sizes[key]
        try:
            size: tuple[int, int] | None = oriented_size(path)
        except (OSError, ValueError, Image.DecompressionBombError):
            size = None
        with self._lock:
            self._sizes[key] = size
            while len(self._sizes) > SIZE_CACHE_SIZE:
                self._sizes.popitem(last=False)
        return size

    def _load(self, path: Path, key: tuple[str, int]) -> Pixels | None:
        """The candidate's thumbnail, cached; ``None`` when its file is unreadable."""
        try:
            image = decode_image(path.read_bytes(), self.limits)
            pixels = to_pixels(image, decoded_scale(image), VERIFY_SIDE)
            # Kept as bytes: float32 thumbnails made a full cache 512 MiB of the API's memory.
            pixels = replace(pixels, grey=np.clip(np.rint(pixels.grey), 0, 255).astype(np.uint8))
        except (OSError, PreprocessError, Image.UnidentifiedImageError):
            return None
        with self._lock:
            self._cache[key] = pixels
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return pixels
