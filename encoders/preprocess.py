"""Image preprocessing shared by training, ONNX export and serving.

One function turns bytes into the model's input so that an image embedded at
ingest and the same image sent as a query go through identical steps:

1. decode with limits (accepted formats only; bytes, pixels and a per-process
   decode memory budget: decompression bombs are refused), JPEG draft mode so
   a 12-megapixel photo is decoded at reduced scale, other large images
   reduced by an integer factor right after decoding;
2. EXIF orientation applied;
3. every mode to RGB (palette, alpha composited on white, CMYK, 16-bit, grey);
4. optional crop box, validated against the oriented original's size and at
   least ``MIN_CROP_SIDE`` pixels a side;
5. resize so the whole image fits 224x224 and pad the rest with white
   (letterbox). Centre cropping would cut off the edges of non-square images,
   and a crop query taken from an edge would then have nothing to match;
6. scale to [0, 1] and z-score with the backbone's statistics.

EfficientNet-Lite0's TF-Lite weights expect ``(x*255 - 127) / 128``, i.e.
mean 127/255 and std 128/255 on [0, 1] input (checked with its classifier;
the package README's ImageNet statistics are wrong for these weights).
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from streams.errors import CodedError

if TYPE_CHECKING:
    from streams.settings import Settings

INPUT_SIZE = 224
MEAN = 127.0 / 255.0
STD = 128.0 / 255.0
PAD_COLOUR = (255, 255, 255)
# Decoded images are reduced to about this on their shorter side (JPEG draft
# mode and reduce_large): twice the model input, room for crops.
REDUCED_SIDE = INPUT_SIZE * 2
# The formats the service reads; never one that Pillow hands to another program.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# A crop box smaller than this on either side (in the image's pixels) is refused.
MIN_CROP_SIDE = 8
EXIF_ORIENTATION = 0x0112
SWAPPED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class PreprocessError(CodedError, ValueError):
    """An image that cannot be turned into model input; ``code`` is machine-readable.

    Codes: ``empty``, ``too_many_bytes``, ``too_many_pixels``, ``undecodable``,
    ``bad_crop``, ``decoder_busy`` (the decode budget stayed full; try again).
    """


class DecodeBudget:
    """Bytes of decoded pixels that this process's decodes may hold at once.

    Every decode reserves :func:`decode_bytes` of its image before loading it
    and returns them when its pixels are reduced, so the memory that decoding
    takes is bounded whatever the number of concurrent requests: an image that
    needs more than the whole budget is refused, others wait their turn (up to
    ``wait_s``, then ``decoder_busy``).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int, wait_s: float) -> Iterator[None]:
        """Reserve ``nbytes`` for the block."""
        if nbytes > self.capacity:
            raise PreprocessError(
                "too_many_pixels",
                f"decoding needs {nbytes / 2**20:.0f} MiB, more than the decode memory limit "
                f"of {self.capacity / 2**20:.0f} MiB",
            )
        with self._free:
            if not self._free.wait_for(lambda: self.held + nbytes <= self.capacity, wait_s):
                raise PreprocessError("decoder_busy", "too many large images are being decoded")
            self.held += nbytes
        try:
            yield
        finally:
            with self._free:
                self.held -= nbytes
                self._free.notify_all()


_BUDGETS: dict[int, DecodeBudget] = {}
_BUDGETS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageLimits:
    """Upper bounds applied before and during decoding.

    ``decode_memory_bytes`` is the budget shared by every decode in the process
    (one :class:`DecodeBudget` per size): peak decode memory stays below it.
    """

    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    decode_memory_bytes: int = 96 * 2**20
    wait_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The configured limits (VISEARCH_MAX_IMAGE_BYTES, _PIXELS, _DECODE_MEMORY_MB)."""
        return cls(
            settings.max_image_bytes,
            settings.max_image_pixels,
            settings.decode_memory_mb * 2**20,
        )

    def budget(self) -> DecodeBudget:
        """This process's budget of ``decode_memory_bytes``."""
        with _BUDGETS_LOCK:
            budget = _BUDGETS.get(self.decode_memory_bytes)
            if budget is None:
                budget = _BUDGETS[self.decode_memory_bytes] = DecodeBudget(self.decode_memory_bytes)
            return budget


@dataclass(frozen=True)
class CropBox:
    """A crop in pixels of the (EXIF-oriented) image, or relative in [0, 1].

    ``left, top`` inclusive, ``right, bottom`` exclusive, as in Pillow.
    ``min_side``: the smallest width and height in pixels the box may have;
    a client's box (:meth:`parse`) needs ``MIN_CROP_SIDE``, the service's own
    tiles of a small image may be smaller.
    """

    left: float
    top: float
    right: float
    bottom: float
    relative: bool = False
    min_side: int = 1

    @classmethod
    def parse(cls, text: str, relative: bool = False) -> CropBox:
        """Parse a client's ``"left,top,right,bottom"``."""
        parts = text.split(",")
        if len(parts) != 4:
            raise PreprocessError("bad_crop", "crop must be 'left,top,right,bottom'")
        try:
            left, top, right, bottom = (float(p) for p in parts)
        except ValueError as exc:
            raise PreprocessError("bad_crop", f"crop values must be numbers: {text!r}") from exc
        return cls(left, top, right, bottom, relative, MIN_CROP_SIDE)

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer pixel box inside ``width x height``; raises ``bad_crop`` if it is not."""
        values = (self.left, self.top, self.right, self.bottom)
        if not all(np.isfinite(values)):
            raise PreprocessError("bad_crop", "crop values must be finite")
        if self.relative:
            if not all(0.0 <= v <= 1.0 for v in values):
                raise PreprocessError("bad_crop", "relative crop values must be in [0, 1]")
            box = (
                round(self.left * width),
                round(self.top * height),
                round(self.right * width),
                round(self.bottom * height),
            )
        else:
            box = tuple(round(v) for v in values)  # type: ignore[assignment]
        left, top, right, bottom = box
        if left < 0 or top < 0 or right > width or bottom > height:
            raise PreprocessError("bad_crop", f"crop {box} is outside the {width}x{height} image")
        if right - left < 1 or bottom - top < 1:
            raise PreprocessError("bad_crop", f"crop {box} is empty")
        if right - left < self.min_side or bottom - top < self.min_side:
            hint = ""
            if not self.relative and all(0.0 <= v <= 1.0 for v in values):
                hint = " (for fractions of the image, send crop_units=relative)"
            side = self.min_side
            raise PreprocessError(
                "bad_crop", f"crop {box} is smaller than {side}x{side} pixels{hint}"
            )
        return left, top, right, bottom


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode bytes to an oriented RGB image, enforcing ``limits``.

    Only :data:`ACCEPTED_FORMATS` are read: Pillow would hand EPS and PDF to
    Ghostscript, a separate program with no time limit (a 60-byte EPS with an
    endless loop kept a core busy per request). Large images are reduced by an
    integer factor right after decoding, before any mode conversion, so the
    full-size pixels exist once and only inside the decode budget (see
    :class:`DecodeBudget`). ``image.info["original_size"]`` keeps the oriented
    size of the original, the coordinates a pixel crop box is given in.
    """
    if not data:
        raise PreprocessError("empty", "no image bytes")
    if len(data) > limits.max_bytes:
        raise PreprocessError(
            "too_many_bytes", f"{len(data)} bytes exceeds the limit of {limits.max_bytes}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            original = opened.size
            if original[0] * original[1] > limits.max_pixels:
                raise PreprocessError(
                    "too_many_pixels",
                    f"{original[0]}x{original[1]} exceeds the limit of {limits.max_pixels} pixels",
                )
            if opened.format == "JPEG":
                # Decode at the smallest scale that still covers the model input
                # twice over (crop queries need some resolution to spare).
                opened.draft("RGB", (REDUCED_SIDE, REDUCED_SIDE))
            with limits.budget().hold(decode_bytes(opened.mode, opened.size), limits.wait_s):
                opened.load()
                image = reduce_large(opened)
    except PreprocessError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PreprocessError("too_many_pixels", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise PreprocessError(
            "undecodable", f"not an image in an accepted format ({ACCEPTED_NAMES})"
        ) from exc
    except Exception as exc:  # Pillow's decoders raise many types on hostile input
        raise PreprocessError("undecodable", f"cannot decode image: {describe_error(exc)}") from exc
    swapped = False
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION)
        image = ImageOps.exif_transpose(image)
        swapped = orientation in SWAPPED_ORIENTATIONS
    except Exception as exc:  # broken EXIF: keep pixels as stored
        del exc
    try:
        rgb = to_rgb(image)
    except Exception as exc:  # an exotic mode without a conversion to RGB
        raise PreprocessError(
            "undecodable", f"cannot convert {image.mode} pixels to RGB: {describe_error(exc)}"
        ) from exc
    rgb.info["original_size"] = original[::-1] if swapped else original
    return rgb


def describe_error(exc: Exception) -> str:
    """A decoder's error without file paths (they name temporary files of this host)."""
    return re.sub(r"(/[^\s'\"]+)+", "<path>", str(exc))[:200] or type(exc).__name__


def original_size(image: Image.Image) -> tuple[int, int]:
    """The oriented size of the file ``image`` was decoded from (its own size if unknown)."""
    size = image.info.get("original_size")
    return (int(size[0]), int(size[1])) if size else image.size


def decode_bytes(mode: str, size: tuple[int, int]) -> int:
    """Bytes that decoding an image of ``mode`` and ``size`` holds at its peak.

    Pillow stores 1, 2 or 4 bytes a pixel (RGB is padded to 4); the reduced
    copy (:func:`reduce_large`, a factor of 2 or more) adds at most 1 byte per
    original pixel whatever its mode, and its conversions work on bands.
    """
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return size[0] * size[1] * (stored + 1) + 65536


def reduce_large(image: Image.Image) -> Image.Image:
    """Reduce by the largest integer factor that keeps both sides >= ``REDUCED_SIDE``.

    The same scale rule as JPEG draft mode, for every other format: what
    follows (orientation, mode conversion, crop, letterbox) then works on a
    small copy, and a 40-megapixel PNG costs its decoded size once. Modes that
    Pillow cannot reduce (palette, 1-bit, 16-bit) are converted band by band.
    """
    factor = min(image.size) // REDUCED_SIDE
    if factor < 2:
        return image
    if image.mode.startswith("I;16"):
        return _reduce_in_bands(image, factor, "L", sixteen_bit_to_grey)
    if image.mode in ("P", "1"):
        target = "L" if image.mode == "1" else "RGBA"
        return _reduce_in_bands(image, factor, target, lambda band: band.convert(target))
    return image.reduce(factor)


def _reduce_in_bands(
    image: Image.Image,
    factor: int,
    mode: str,
    convert: Callable[[Image.Image], Image.Image],
    rows: int = 256,
) -> Image.Image:
    """``convert`` then reduce ``image`` a band of rows at a time (whole blocks only)."""
    width, height = image.size
    width, height = width - width % factor, height - height % factor
    band_rows = max(1, rows // factor) * factor
    reduced = Image.new(mode, (width // factor, height // factor))
    for top in range(0, height, band_rows):
        band = image.crop((0, top, width, min(height, top + band_rows)))
        reduced.paste(convert(band).reduce(factor), (0, top // factor))
    return reduced


def sixteen_bit_to_grey(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit "I") greyscale to 8-bit by its full range, without float copies.

    16-bit spans 0..65535 whatever its content, so the top byte is the 8-bit
    value and a dark image stays dark. (As float64 this took 8 bytes a pixel:
    +1 GB for a 6300x6300 PNG.)
    """
    return Image.fromarray((np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode.startswith("I;16") or image.mode == "I":
        # PNG and TIFF decoders may hand 16-bit grey over as 32-bit mode "I".
        image = sixteen_bit_to_grey(image)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        image = Image.fromarray(np.clip(array * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in {"RGBA", "LA", "PA", "La", "RGBa"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*PAD_COLOUR, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def crop_image(image: Image.Image, box: CropBox | None) -> Image.Image:
    """Apply a crop box given in the original's coordinates (no-op for ``None``).

    The box is validated against :func:`original_size` and scaled to the
    decoded pixels (a JPEG in draft mode or a reduced image is smaller).
    """
    if box is None:
        return image
    width, height = original_size(image)
    left, top, right, bottom = box.to_pixels(width, height)
    sx, sy = image.width / width, image.height / height
    scaled = (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
    return image.crop(
        (scaled[0], scaled[1], max(scaled[2], scaled[0] + 1), max(scaled[3], scaled[1] + 1))
    )


def letterbox(image: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """Fit inside ``size x size`` keeping the aspect ratio, pad with white."""
    width, height = image.size
    scale = size / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), PAD_COLOUR)
    canvas.paste(resized, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas


def to_array(image: Image.Image) -> np.ndarray:
    """RGB image (already ``INPUT_SIZE`` square) to normalised CHW float32."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - MEAN) / STD
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def preprocess(
    data: bytes, crop: CropBox | None = None, limits: ImageLimits = ImageLimits()
) -> np.ndarray:
    """Bytes (+ optional crop) to a ``(3, 224, 224)`` float32 model input."""
    return preprocess_image(decode_image(data, limits), crop)


def preprocess_image(image: Image.Image, crop: CropBox | None = None) -> np.ndarray:
    """A decoded RGB image (+ optional crop) to a ``(3, 224, 224)`` model input."""
    return to_array(letterbox(crop_image(image, crop)))
