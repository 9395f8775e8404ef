"""The eleven DISC-style edit kinds of the photo sets, one kind per query.

Each kind is a function ``(image, rng, other) -> (edited image, parameters)``:
``other`` is another photo (for ``patch`` and for a ``screenshot``'s
background), and the parameters are what the manifest records, so any query
can be redrawn and a failure traced to its edit. :mod:`.edits` already has
grey, flip, rotate, blur and text (its ``_grayscale`` and ``_flip`` are used
as they are; rotate, blur and text draw the same kinds of values here but
return them). New here: ``jitter`` (a small random crop, shift and scale
with colour jitter), ``patch`` (a piece of another photo pasted on),
``pad`` (a border), ``squeeze`` (a changed aspect ratio), ``jpeg`` (heavy
recompression) and ``screenshot`` (the photo shown at about half the width
of a larger window that has a title bar, on a gradient or another picture,
as a shared screenshot shows it).

Queries are saved as JPEG quality :data:`SAVE_QUALITY` except ``jpeg``
queries, whose quality is their edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from visearch.evaluation.crops import jpeg_bytes
from visearch.evaluation.edits import _flip, _grayscale

Params = dict[str, Any]
PhotoEdit = Callable[[Image.Image, np.random.Generator, Image.Image], tuple[Image.Image, Params]]

SAVE_QUALITY = 90
JPEG_QUALITY = (8, 25)  # the jpeg kind's quality range
WORK_SIDE = 1024  # sources are reduced to this long side before an edit
WHITE = (255, 255, 255)


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in rng.integers(0, 256, 3))
    return (r, g, b)


def jitter(
    image: Image.Image, rng: np.random.Generator, _: Image.Image
) -> tuple[Image.Image, Params]:
    """Keep 80-95 % of each side at a random offset, rescale by 0.7-1.3, jitter the colours."""
    width, height = image.size
    keep_w, keep_h = _u(rng, 0.80, 0.95), _u(rng, 0.80, 0.95)
    w, h = max(8, round(width * keep_w)), max(8, round(height * keep_h))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    scale = _u(rng, 0.7, 1.3)
    out = image.crop((x, y, x + w, y + h))
    out = out.resize(
        (max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BILINEAR
    )
    brightness, contrast, saturation = (_u(rng, 0.8, 1.2) for _ in range(3))
    out = ImageEnhance.Brightness(out).enhance(brightness)
    out = ImageEnhance.Contrast(out).enhance(contrast)
    out = ImageEnhance.Color(out).enhance(saturation)
    hue = _u(rng, -0.04, 0.04)
    hsv = np.asarray(out.convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + round(hue * 255)) % 256).astype(np.uint8)
    out = Image.fromarray(hsv, "HSV").convert("RGB")
    params = {
        "box": [x, y, x + w, y + h],
        "scale": round(scale, 3),
        "brightness": round(brightness, 3),
        "contrast": round(contrast, 3),
        "saturation": round(saturation, 3),
        "hue": round(hue, 3),
    }
    return out, params


def gray(
    image: Image.Image, rng: np.random.Generator, other: Image.Image
) -> tuple[Image.Image, Params]:
    return _grayscale(image, rng, other), {}


def rotate(
    image: Image.Image, rng: np.random.Generator, _: Image.Image
) -> tuple[Image.Image, Params]:
    """A quarter turn, or a tilt of 5-30 degrees either way with white corners."""
    if rng.random() < 0.5:
        turns = int(rng.integers(1, 4))
        return image.rotate(90 * turns, expand=True), {"angle": 90 * turns}
    angle = _u(rng, 5, 30) * (1 if rng.random() < 0.5 else -1)
    out = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=WHITE)
    return out, {"angle": round(angle, 2)}


def flip(
    image: Image.Image, rng: np.random.Generator, other: Image.Image
) -> tuple[Image.Image, Params]:
    return _flip(image, rng, other), {"axis": "horizontal"}


def blur(
    image: Image.Image, rng: np.random.Generator, _: Image.Image
) -> tuple[Image.Image, Params]:
    """Gaussian blur of 1-4 px per 512 px of the long side."""
    radius = _u(rng, 1.0, 4.0) * max(image.size) / 512
    return image.filter(ImageFilter.GaussianBlur(radius)), {"radius": round(radius, 2)}


def jpeg(
    image: Image.Image, rng: np.random.Generator, _: Image.Image
) -> tuple[Image.Image, Params]:
    """Pixels unchanged here; the query is saved at JPEG quality 8-25 (its ``quality``)."""
    return image, {"quality": int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))}


def text(
    image: Image.Image, rng: np.random.Generator, _: Image.Image
) -> tuple[Image.Image, Params]:
    """One or two random words, 8-20 % of the height each, in random colours."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    lines = []
    for _line in range(int(rng.integers(1, 3))):
        size = max(8, int(out.height * _u(rng, 0.08, 0.2)))
        length = int(rng.integers(3, 9))
        word = "".join(letters[int(i)] for i in rng.integers(0, len(letters), length))
        colour = _colour(rng)
        x = int(rng.integers(0, max(1, out.width // 2)))
        y = int(rng.integers(0, max(1, out.height - size)))
        draw.text((x, y), word, fill=colour, font=ImageFont.load_default(size=size))
        lines.append({"word": word, "size": size, "colour": list(colour), "at": [x, y]})
    return out, {"text": lines}


def patch(
    image: Image.Image, rng: np.random.Generator, other: Image.Image
) -> tuple[Image.Image, Params]:
    """A rectangle cut from another photo, 10-30 % of this one's area, pasted at random."""
    out = image.copy()
    fraction = _u(rng, 0.10, 0.30)
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    w = min(out.width, max(8, round(np.sqrt(fraction * out.width * out.height * aspect))))
    h = min(out.height, max(8, round(np.sqrt(fraction * out.width * out.height / aspect))))
    source = other
    if source.width < w or source.height < h:
        factor = max(w / source.width, h / source.height)
        size = (int(np.ceil(source.width * factor)), int(np.ceil(source.height * factor)))
        source = source.resize(size, Image.Resampling.BILINEAR)
    sx, sy = int(rng.integers(0, source.width - w + 1)), int(rng.integers(0, source.height - h + 1))
    x, y = int(rng.integers(0, out.width - w + 1)), int(rng.integers(0, out.height - h + 1))
    out.paste(source.crop((sx, sy, sx + w, sy + h)).convert("RGB"), (x, y))
    params = {
        "area": round(w * h / (out.width * out.height), 3),
        "from": [sx, sy],
        "at": [x, y, w, h],
    }
    return out, params


def pad(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> tuple[Image.Image, Params]:
    """A border of 5-40 % of the side on each edge: solid colour, black, white or blurred copy."""
    left, top, right, bottom = (
        round(_u(rng, 0.05, 0.4) * side)
        for side in (image.width, image.height, image.width, image.height)
    )
    size = (image.width + left + right, image.height + top + bottom)
    fill = ("colour", "black", "white", "blurred")[int(rng.integers(0, 4))]
    if fill == "blurred":
        canvas = image.resize(size, Image.Resampling.BILINEAR).filter(
            ImageFilter.GaussianBlur(max(size) / 30)
        )
        colour: list[int] | None = None
    else:
        rgb = {"black": (0, 0, 0), "white": WHITE}.get(fill) or _colour(rng)
        canvas = Image.new("RGB", size, rgb)
        colour = list(rgb)
    canvas.paste(image, (left, top))
    return canvas, {"border": [left, top, right, bottom], "fill": fill, "colour": colour}


def squeeze(
    image: Image.Image, rng: np.random.Generator, _: Image.Image
) -> tuple[Image.Image, Params]:
    """One axis scaled by 0.5-0.75 (narrower or flatter): the aspect ratio changes by 1.33-2x."""
    factor = _u(rng, 0.5, 0.75)
    axis = "x" if rng.random() < 0.5 else "y"
    sx, sy = (factor, 1.0) if axis == "x" else (1.0, factor)
    size = (max(8, round(image.width * sx)), max(8, round(image.height * sy)))
    return image.resize(size, Image.Resampling.BILINEAR), {"axis": axis, "factor": round(factor, 3)}


def _gradient(
    size: tuple[int, int], a: tuple[int, int, int], b: tuple[int, int, int]
) -> Image.Image:
    width, height = size
    t = (
        np.arange(width)[None, :] / max(1, width - 1)
        + np.arange(height)[:, None] / max(1, height - 1)
    ) / 2
    pixels = (
        np.asarray(a)[None, None, :] * (1 - t[..., None])
        + np.asarray(b)[None, None, :] * t[..., None]
    )
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def screenshot(
    image: Image.Image, rng: np.random.Generator, other: Image.Image
) -> tuple[Image.Image, Params]:
    """The photo at 40-60 % of the width of a larger window, as a shared screenshot shows it.

    The window is 4:3 to 16:9 with a title bar across its top (about 3 % of its
    height, three buttons and a file name) and a 1 px frame; below the bar, a
    diagonal gradient or another photo, and on it the photo at a random place
    with a 1 px border and a drop shadow.
    """
    share = _u(rng, 0.40, 0.60)
    ratio = _u(rng, 1.33, 1.78)
    shown_w = max(16, round(image.width * _u(rng, 0.5, 1.0)))
    shown_h = max(8, round(image.height * shown_w / image.width))
    window_w = round(shown_w / share)
    bar = max(14, round(window_w / ratio * _u(rng, 0.025, 0.04)))
    window_h = max(round(window_w / ratio), shown_h + bar + 24)
    content = (window_w, window_h - bar)
    if rng.random() < 0.5:
        background = "gradient"
        fill = _gradient(content, _colour(rng), _colour(rng))
    else:
        background = "photo"
        factor = max(content[0] / other.width, content[1] / other.height)
        covered = other.resize(
            (int(np.ceil(other.width * factor)), int(np.ceil(other.height * factor))),
            Image.Resampling.BILINEAR,
        )
        fill = covered.crop((0, 0, *content)).convert("RGB")
    shade = int(rng.integers(40, 236))
    canvas = Image.new("RGB", (window_w, window_h), (shade, shade, shade))
    canvas.paste(fill, (0, bar))
    draw = ImageDraw.Draw(canvas)
    radius = max(3, bar // 4)
    for i, rgb in enumerate(((236, 95, 87), (245, 190, 80), (98, 197, 84))):
        cx, cy = bar // 2 + i * (radius * 3), bar // 2
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=rgb)
    letters = "abcdefghijklmnopqrstuvwxyz"
    title = "".join(letters[int(i)] for i in rng.integers(0, 26, int(rng.integers(4, 10)))) + ".jpg"
    ink = (20, 20, 20) if shade > 128 else (235, 235, 235)
    font = ImageFont.load_default(size=max(8, bar * 6 // 10))
    draw.text((window_w // 2 - bar, bar // 5), title, fill=ink, font=font)
    x = int(rng.integers(2, max(3, window_w - shown_w - 8)))
    y = bar + int(rng.integers(2, max(3, window_h - bar - shown_h - 8)))
    draw.rectangle((x + 5, y + 5, x + shown_w + 5, y + shown_h + 5), fill=(30, 30, 30))
    draw.rectangle((x - 1, y - 1, x + shown_w, y + shown_h), outline=(shade // 2,) * 3)
    canvas.paste(image.resize((shown_w, shown_h), Image.Resampling.BILINEAR), (x, y))
    draw.rectangle((0, 0, window_w - 1, window_h - 1), outline=(shade // 2,) * 3)
    params = {
        "window": [window_w, window_h],
        "title_bar": bar,
        "photo": [x, y, shown_w, shown_h],
        "background": background,
        "share": round(shown_w / window_w, 3),
    }
    return canvas, params


PHOTO_EDITS: dict[str, PhotoEdit] = {
    "jitter": jitter,
    "gray": gray,
    "rotate": rotate,
    "flip": flip,
    "blur": blur,
    "jpeg": jpeg,
    "text": text,
    "patch": patch,
    "pad": pad,
    "squeeze": squeeze,
    "screenshot": screenshot,
}
EDIT_KINDS = tuple(PHOTO_EDITS)


def working_copy(image: Image.Image, side: int = WORK_SIDE) -> Image.Image:
    """``image`` reduced to at most ``side`` on its long side (edits and query sizes bounded)."""
    if max(image.size) <= side:
        return image
    out = image.copy()
    out.thumbnail((side, side), Image.Resampling.LANCZOS)
    return out


def edit_query(
    kind: str, image: Image.Image, rng: np.random.Generator, other: Image.Image
) -> tuple[bytes, Params]:
    """JPEG bytes of one ``kind`` edit of ``image`` and its parameters."""
    edited, params = PHOTO_EDITS[kind](working_copy(image), rng, working_copy(other))
    quality = int(params["quality"]) if kind == "jpeg" else SAVE_QUALITY
    return jpeg_bytes(edited.convert("RGB"), quality), {**params, "size": list(edited.size)}


# Planted near-duplicates: what a user would accept as the same photo.
def near_duplicate(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, Params]:
    """A light edit: resize to 60-90 %, maybe trim 1-4 % per edge, +-8 % brightness, JPEG 75-92."""
    params: Params = {}
    out = image
    if rng.random() < 0.5:
        trims = [
            round(_u(rng, 0.01, 0.04) * s) for s in (out.width, out.height, out.width, out.height)
        ]
        out = out.crop((trims[0], trims[1], out.width - trims[2], out.height - trims[3]))
        params["trim"] = trims
    scale = _u(rng, 0.6, 0.9)
    out = out.resize(
        (max(8, round(out.width * scale)), max(8, round(out.height * scale))),
        Image.Resampling.LANCZOS,
    )
    brightness = _u(rng, 0.92, 1.08)
    out = ImageEnhance.Brightness(out).enhance(brightness)
    quality = int(rng.integers(75, 93))
    params.update(
        {"scale": round(scale, 3), "brightness": round(brightness, 3), "quality": quality}
    )
    return jpeg_bytes(out, quality), params
