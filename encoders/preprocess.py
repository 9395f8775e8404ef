"""Image preprocessing shared by training, ONNX export and serving.

One function turns bytes into the model's input so that an image embedded at
ingest and the same image sent as a query go through identical steps:

1. decode with limits (bytes, pixels: decompression bombs are refused),
   JPEG draft mode so a 12-megapixel photo is decoded at reduced scale;
2. EXIF orientation applied;
3. every mode to RGB (palette, alpha composited on white, CMYK, 16-bit, grey);
4. optional crop box, validated against the oriented image;
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
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from streams.settings import Settings

INPUT_SIZE = 224
MEAN = 127.0 / 255.0
STD = 128.0 / 255.0
PAD_COLOUR = (255, 255, 255)


class PreprocessError(ValueError):
    """An image that cannot be turned into model input; ``code`` is machine-readable.

    Codes: ``empty``, ``too_many_bytes``, ``too_many_pixels``, ``undecodable``,
    ``bad_crop``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageLimits:
    """Upper bounds applied before and during decoding."""

    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The configured limits (VISEARCH_MAX_IMAGE_BYTES, VISEARCH_MAX_IMAGE_PIXELS)."""
        return cls(settings.max_image_bytes, settings.max_image_pixels)


@dataclass(frozen=True)
class CropBox:
    """A crop in pixels of the (EXIF-oriented) image, or relative in [0, 1].

    ``left, top`` inclusive, ``right, bottom`` exclusive, as in Pillow.
    """

    left: float
    top: float
    right: float
    bottom: float
    relative: bool = False

    @classmethod
    def parse(cls, text: str, relative: bool = False) -> CropBox:
        """Parse ``"left,top,right,bottom"``."""
        parts = text.split(",")
        if len(parts) != 4:
            raise PreprocessError("bad_crop", "crop must be 'left,top,right,bottom'")
        try:
            left, top, right, bottom = (float(p) for p in parts)
        except ValueError as exc:
            raise PreprocessError("bad_crop", f"crop values must be numbers: {text!r}") from exc
        return cls(left, top, right, bottom, relative)

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
        return left, top, right, bottom


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode bytes to an oriented RGB image, enforcing ``limits``."""
    if not data:
        raise PreprocessError("empty", "no image bytes")
    if len(data) > limits.max_bytes:
        raise PreprocessError(
            "too_many_bytes", f"{len(data)} bytes exceeds the limit of {limits.max_bytes}"
        )
    image: Image.Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            image = opened
            width, height = image.size
            if width * height > limits.max_pixels:
                raise PreprocessError(
                    "too_many_pixels",
                    f"{width}x{height} exceeds the limit of {limits.max_pixels} pixels",
                )
            if opened.format == "JPEG":
                # Decode at the smallest scale that still covers the model input
                # twice over (crop queries need some resolution to spare).
                opened.draft("RGB", (INPUT_SIZE * 2, INPUT_SIZE * 2))
            image.load()
    except PreprocessError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PreprocessError("too_many_pixels", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise PreprocessError(
            "undecodable", "not an image in a format this service reads (e.g. JPEG, PNG, WebP)"
        ) from exc
    except Exception as exc:  # Pillow's decoders raise many types on hostile input
        raise PreprocessError("undecodable", f"cannot decode image: {exc}") from exc
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as exc:  # broken EXIF: keep pixels as stored
        del exc
    try:
        return to_rgb(image)
    except Exception as exc:  # an exotic mode without a conversion to RGB
        raise PreprocessError(
            "undecodable", f"cannot convert {image.mode} pixels to RGB: {exc}"
        ) from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        # 16-bit greyscale spans 0..65535 whatever its content (PNG and TIFF
        # decoders may hand it over as 32-bit mode "I"), so scale by the range,
        # not by the brightest pixel: a dark image must stay dark.
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array / 65535.0 * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in {"RGBA", "LA", "PA", "La", "RGBa"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*PAD_COLOUR, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def crop_image(image: Image.Image, box: CropBox | None) -> Image.Image:
    """Apply a validated crop box (no-op for ``None``)."""
    if box is None:
        return image
    return image.crop(box.to_pixels(*image.size))


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
