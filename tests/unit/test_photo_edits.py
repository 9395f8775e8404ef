"""The photo sets' edit kinds on a synthetic image: sizes, determinism, what each does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visearch.evaluation.photo_edits import (
    EDIT_KINDS,
    PHOTO_EDITS,
    SAVE_QUALITY,
    edit_query,
    near_duplicate,
)


def _picture(width: int = 320, height: int = 240, seed: int = 1) -> Image.Image:
    """Smooth gradients plus noise: a stand-in photo with no flat area."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    base = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    noise = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


IMAGE = _picture()
OTHER = _picture(200, 300, seed=2)


def _run(kind: str, seed: int = 7) -> tuple[Image.Image, dict]:
    return PHOTO_EDITS[kind](IMAGE, np.random.default_rng(seed), OTHER)


def test_eleven_kinds_as_the_independent_set_has() -> None:
    assert set(EDIT_KINDS) == {
        "jitter", "gray", "rotate", "flip", "blur", "jpeg",
        "text", "patch", "pad", "squeeze", "screenshot",
    }  # fmt: skip


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_each_kind_is_deterministic_by_seed(kind: str) -> None:
    a, params_a = _run(kind)
    b, params_b = _run(kind)
    assert params_a == params_b
    assert a.tobytes() == b.tobytes()
    assert a.mode == "RGB" and min(a.size) >= 8
    data, params = edit_query(kind, IMAGE, np.random.default_rng(7), OTHER)
    again, _ = edit_query(kind, IMAGE, np.random.default_rng(7), OTHER)
    assert data == again and data[:2] == b"\xff\xd8"  # a JPEG
    assert Image.open(io.BytesIO(data)).size == tuple(params["size"])


@pytest.mark.parametrize(
    "kind", ["jitter", "rotate", "text", "patch", "pad", "squeeze", "screenshot"]
)
def test_another_seed_gives_another_edit(kind: str) -> None:
    draws = {repr(_run(kind, seed)[1]) for seed in range(6)}
    assert len(draws) > 1


def test_squeeze_changes_the_aspect_ratio() -> None:
    for seed in range(10):
        out, params = _run("squeeze", seed)
        ratio = (out.width / out.height) / (IMAGE.width / IMAGE.height)
        assert ratio <= 0.76 or ratio >= 1.32, params
        assert params["axis"] in ("x", "y") and 0.5 <= params["factor"] <= 0.75


def test_pad_adds_a_border_around_the_unchanged_image() -> None:
    for seed in range(8):
        out, params = _run("pad", seed)
        left, top, right, bottom = params["border"]
        assert min(params["border"]) > 0
        assert out.size == (IMAGE.width + left + right, IMAGE.height + top + bottom)
        inner = out.crop((left, top, left + IMAGE.width, top + IMAGE.height))
        assert inner.tobytes() == IMAGE.tobytes()
        if params["fill"] in ("black", "white", "colour"):
            assert out.getpixel((0, 0)) == tuple(params["colour"])


def test_screenshot_shows_the_image_at_about_half_size_in_a_window_with_a_title_bar() -> None:
    for seed in range(10):
        out, params = _run("screenshot", seed)
        window_w, window_h = params["window"]
        x, y, shown_w, shown_h = params["photo"]
        bar = params["title_bar"]
        assert out.size == (window_w, window_h)
        assert 0.38 <= shown_w / window_w <= 0.62
        assert abs(shown_w / shown_h - IMAGE.width / IMAGE.height) < 0.05
        # the photo lies below the title bar, inside the window
        assert bar >= 14 and y > bar and x > 0
        assert x + shown_w < window_w and y + shown_h < window_h
        shown = np.asarray(out.crop((x, y, x + shown_w, y + shown_h)), dtype=np.float64)
        expected = np.asarray(IMAGE.resize((shown_w, shown_h), Image.Resampling.BILINEAR))
        assert np.abs(shown - expected).mean() < 1.0
        assert params["background"] in ("gradient", "photo")
        # the title bar is one grey with three coloured buttons
        title = np.asarray(out.crop((1, 1, window_w - 1, bar)))
        assert (title.max(axis=2) - title.min(axis=2) > 60).any()


def test_flip_gray_rotate_blur_jpeg() -> None:
    flipped, _ = _run("flip")
    assert np.array_equal(np.asarray(flipped)[:, ::-1], np.asarray(IMAGE))
    grey, _ = _run("gray")
    pixels = np.asarray(grey)
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    for seed in range(6):
        turned, params = _run("rotate", seed)
        if params["angle"] in (90, 270):
            assert turned.size == (IMAGE.height, IMAGE.width)
        elif params["angle"] != 180:
            assert turned.width > IMAGE.width and 5 <= abs(params["angle"]) <= 30
    blurred, params = _run("blur")
    assert params["radius"] > 0
    assert np.asarray(blurred, dtype=np.float64).std() < np.asarray(IMAGE, dtype=np.float64).std()
    _, params = _run("jpeg")
    low, _ = edit_query("jpeg", IMAGE, np.random.default_rng(7), OTHER)
    high, _ = edit_query("flip", IMAGE, np.random.default_rng(7), OTHER)
    assert 8 <= params["quality"] <= 25 < SAVE_QUALITY
    assert len(low) < len(high)


def test_patch_pastes_a_piece_of_the_other_photo() -> None:
    out, params = _run("patch")
    x, y, w, h = params["at"]
    sx, sy = params["from"]
    assert 0.09 <= params["area"] <= 0.31 and out.size == IMAGE.size
    assert (
        out.crop((x, y, x + w, y + h)).tobytes() == OTHER.crop((sx, sy, sx + w, sy + h)).tobytes()
    )


def test_jitter_is_a_small_crop_and_scale_with_colour_changes() -> None:
    out, params = _run("jitter")
    left, top, right, bottom = params["box"]
    assert 0.8 * IMAGE.width - 1 <= right - left <= 0.95 * IMAGE.width + 1
    assert 0.7 <= params["scale"] <= 1.3
    assert out.size == (
        round((right - left) * params["scale"]),
        round((bottom - top) * params["scale"]),
    )
    assert all(0.8 <= params[k] <= 1.2 for k in ("brightness", "contrast", "saturation"))


def test_near_duplicate_is_a_light_edit() -> None:
    data, params = near_duplicate(IMAGE, np.random.default_rng(3))
    again, _ = near_duplicate(IMAGE, np.random.default_rng(3))
    assert data == again
    out = Image.open(io.BytesIO(data))
    assert 0.55 * IMAGE.width <= out.width <= 0.9 * IMAGE.width + 1
    assert 75 <= params["quality"] <= 92
