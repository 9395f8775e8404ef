"""SimCLR-style augmentations of decoded images, seeded, in PIL.

A view is made from a decoded RGB image (:func:`encoders.preprocess.decode_image`)
and then goes through the serving preprocessing
(:func:`encoders.preprocess.preprocess_image`: letterbox, scale, z-score), so
training sees exactly the inputs a query would produce. The list follows
SimCLR (random resized crop, flip, colour jitter, grayscale, blur) plus what
users do to images before searching with them: JPEG re-encoding, and text or
shapes drawn over them. Crops go down to ~8 % of the area because crop
queries of 3-15 % are the hard case of this product (docs/evaluation.md, Crop queries).

No torchvision here (its PyPI wheel does not import beside the pinned torch),
and every random draw comes from the ``random.Random`` passed in, so a view
depends only on ``(seed, image id, view number)`` — see :func:`view_rng` —
and not on batching or worker order.
"""

from __future__ import annotations

import io
import math
import random
import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

# Work at no more than twice the model input: colour and blur operations on a
# 12-megapixel photo would cost far more than the network does.
WORK_SIZE = 448
REFERENCE_SIZE = 224  # blur radii are given for a view of this size, as in SimCLR


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths and probabilities (SimCLR's defaults where it has one)."""

    min_crop_area: float = 0.08
    max_crop_area: float = 1.0
    min_aspect: float = 3 / 4
    max_aspect: float = 4 / 3
    p_flip: float = 0.5
    p_jitter: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p_grayscale: float = 0.2
    p_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    p_overlay: float = 0.3
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)


def view_rng(seed: int, image_id: str, view: int) -> random.Random:
    """The generator of one view: the same view whatever order views are made in."""
    return random.Random(f"{seed}:{image_id}:{view}")


def augment(
    image: Image.Image, rng: random.Random, config: AugmentConfig = AugmentConfig()
) -> Image.Image:
    """One random view of an RGB image (not yet letterboxed or normalised)."""
    view = random_resized_crop(image, rng, config)
    if rng.random() < config.p_flip:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < config.p_jitter:
        view = colour_jitter(view, rng, config)
    if rng.random() < config.p_grayscale:
        view = view.convert("L").convert("RGB")
    if rng.random() < config.p_overlay:
        view = overlay(view, rng)
    if rng.random() < config.p_blur:
        scale = max(view.size) / REFERENCE_SIZE
        view = view.filter(ImageFilter.GaussianBlur(rng.uniform(*config.blur_sigma) * scale))
    if rng.random() < config.p_jpeg:
        view = jpeg_reencode(view, rng.randint(*config.jpeg_quality))
    return view


def random_resized_crop(
    image: Image.Image, rng: random.Random, config: AugmentConfig = AugmentConfig()
) -> Image.Image:
    """A crop of random area and aspect ratio (torchvision's sampling), at most WORK_SIZE.

    It is not squashed to a square: the serving letterbox keeps aspect
    ratios, so the crop keeps its own too.
    """
    width, height = image.size
    area = width * height
    box = (0, 0, width, height)
    for _ in range(10):
        target = area * rng.uniform(config.min_crop_area, config.max_crop_area)
        aspect = math.exp(rng.uniform(math.log(config.min_aspect), math.log(config.max_aspect)))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            box = (left, top, left + w, top + h)
            break
    crop = image.crop(box)
    if max(crop.size) > WORK_SIZE:
        scale = WORK_SIZE / max(crop.size)
        size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
        crop = crop.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return crop


def colour_jitter(image: Image.Image, rng: random.Random, config: AugmentConfig) -> Image.Image:
    """Brightness, contrast, saturation and hue changes, in random order."""
    steps = ["brightness", "contrast", "saturation", "hue"]
    rng.shuffle(steps)
    for step in steps:
        if step == "hue":
            image = shift_hue(image, rng.uniform(-config.hue, config.hue))
        else:
            strength: float = getattr(config, step)
            factor = rng.uniform(max(0.0, 1 - strength), 1 + strength)
            enhancer = {
                "brightness": ImageEnhance.Brightness,
                "contrast": ImageEnhance.Contrast,
                "saturation": ImageEnhance.Color,
            }[step]
            image = enhancer(image).enhance(factor)
    return image


def shift_hue(image: Image.Image, amount: float) -> Image.Image:
    """Rotate the hue by ``amount`` of a full turn (-0.5..0.5)."""
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(amount * 255)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def overlay(image: Image.Image, rng: random.Random) -> Image.Image:
    """Text or filled rectangles drawn over the image, as in memes and screenshots."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    if rng.random() < 0.5:
        size = max(8, round(min(width, height) * rng.uniform(0.08, 0.2)))
        text = "".join(rng.choice(string.ascii_letters + " ") for _ in range(rng.randint(3, 12)))
        position = (rng.uniform(0, width * 0.7), rng.uniform(0, height * 0.85))
        draw.text(position, text, fill=colour, font=ImageFont.load_default(size))
    else:
        for _ in range(rng.randint(1, 3)):
            w = rng.uniform(0.05, 0.3) * width
            h = rng.uniform(0.05, 0.3) * height
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            draw.rectangle((left, top, left + w, top + h), fill=colour)
    return image


def jpeg_reencode(image: Image.Image, quality: int) -> Image.Image:
    """The image after a JPEG round trip at ``quality`` (blocking, ringing, chroma loss)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
