"""Preprocessing: decode limits, mode conversion, orientation, crops, letterbox."""

import io
import math
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoders.preprocess import (
    ACCEPTED_FORMATS,
    INPUT_SIZE,
    MIN_CROP_SIDE,
    REDUCED_SIDE,
    CropBox,
    DecodeBudget,
    ImageLimits,
    PreprocessError,
    crop_image,
    decode_bytes,
    decode_image,
    describe_error,
    letterbox,
    original_size,
    preprocess,
    reduce_large,
    to_rgb,
)

WHITE = (1 - 127 / 255) / (128 / 255)
BLACK = -(127 / 255) / (128 / 255)
TUX_STAMPS = Path("/usr/share/tuxpaint/stamps")


def _encode(image, fmt="PNG", **params):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _error(callable_, *args, **kwargs):
    with pytest.raises(PreprocessError) as info:
        callable_(*args, **kwargs)
    return info.value


def _code(callable_, *args, **kwargs):
    return _error(callable_, *args, **kwargs).code


def test_output_shape_and_dtype():
    out = preprocess(_encode(Image.new("RGB", (31, 17), (10, 200, 30))))
    assert out.shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]


def test_white_and_black_normalisation():
    white = preprocess(_encode(Image.new("RGB", (50, 50), (255, 255, 255))))
    black = preprocess(_encode(Image.new("RGB", (50, 50), (0, 0, 0))))
    np.testing.assert_allclose(white, WHITE, atol=1e-6)
    np.testing.assert_allclose(black, BLACK, atol=1e-6)


def test_channels_are_in_rgb_order():
    out = preprocess(_encode(Image.new("RGB", (40, 40), (255, 0, 0))))
    np.testing.assert_allclose(out[0], WHITE, atol=1e-6)
    np.testing.assert_allclose(out[1], BLACK, atol=1e-6)
    np.testing.assert_allclose(out[2], BLACK, atol=1e-6)


def test_letterbox_keeps_aspect_ratio_with_white_padding():
    out = preprocess(_encode(Image.new("RGB", (400, 100), (255, 0, 0))))
    # 400x100 scales to 224x56, pasted at row (224-56)//2 = 84.
    band = slice(84, 140)
    np.testing.assert_allclose(out[0, band], WHITE, atol=1e-6)
    np.testing.assert_allclose(out[1, band], BLACK, atol=1e-6)
    np.testing.assert_allclose(out[2, band], BLACK, atol=1e-6)
    np.testing.assert_allclose(out[:, :84], WHITE, atol=1e-6)
    np.testing.assert_allclose(out[:, 140:], WHITE, atol=1e-6)


def test_letterbox_portrait_pads_left_and_right():
    canvas = np.asarray(letterbox(Image.new("RGB", (50, 200), (0, 0, 255))))
    assert canvas.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    # 50x200 -> 56x224 at column 84.
    assert (canvas[:, 84:140] == (0, 0, 255)).all()
    assert (canvas[:, :84] == 255).all()
    assert (canvas[:, 140:] == 255).all()


def test_letterbox_upscales_small_images():
    canvas = np.asarray(letterbox(Image.new("RGB", (2, 2), (0, 0, 0))))
    assert (canvas == 0).all()


def _decoded_pixels(image, fmt="PNG", **params):
    decoded = decode_image(_encode(image, fmt, **params))
    assert decoded.mode == "RGB"
    return np.asarray(decoded)


def test_palette_image():
    image = Image.new("P", (4, 4))
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    image.putpixel((1, 1), 1)
    pixels = _decoded_pixels(image)
    assert tuple(pixels[1, 1]) == (10, 20, 30)
    assert tuple(pixels[0, 0]) == (0, 0, 0)


def test_palette_transparency_is_composited_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 0, 0] + [0] * (256 * 3 - 6))
    image.putpixel((2, 2), 1)
    pixels = _decoded_pixels(image, transparency=0)
    assert (pixels[0, 0] == 255).all()
    assert tuple(pixels[2, 2]) == (200, 0, 0)


def test_rgba_transparent_pixels_become_white():
    array = np.zeros((6, 6, 4), dtype=np.uint8)
    array[..., 2] = 255  # blue everywhere, transparent
    array[:3, :, 3] = 255  # top half opaque
    pixels = _decoded_pixels(Image.fromarray(array, "RGBA"))
    assert (pixels[:3] == (0, 0, 255)).all()
    assert (pixels[3:] == 255).all()


def test_rgba_half_transparent_blends_with_white():
    pixels = _decoded_pixels(Image.new("RGBA", (3, 3), (0, 0, 0, 128)))
    assert np.abs(pixels.astype(int) - 127).max() <= 1


def test_la_image():
    array = np.zeros((4, 4, 2), dtype=np.uint8)
    array[..., 0] = 40
    array[0, :, 1] = 255
    pixels = _decoded_pixels(Image.fromarray(array, "LA"))
    assert (pixels[0] == 40).all()
    assert (pixels[1:] == 255).all()


def test_pa_image_with_transparent_pixels():
    image = Image.new("PA", (4, 4))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), (1, 255))
    image.putpixel((1, 0), (1, 0))
    pixels = np.asarray(to_rgb(image))
    assert tuple(pixels[0, 0]) == (0, 255, 0)
    assert tuple(pixels[0, 1]) == (255, 255, 255)


def test_greyscale_image():
    pixels = _decoded_pixels(Image.new("L", (5, 5), 77))
    assert (pixels == 77).all()


def test_one_bit_image():
    image = Image.new("1", (8, 8), 0)
    image.putpixel((3, 3), 1)
    pixels = _decoded_pixels(image)
    assert (pixels[3, 3] == 255).all()
    assert (pixels[0, 0] == 0).all()


def test_cmyk_jpeg():
    pixels = _decoded_pixels(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG", quality=95)
    assert pixels.min() >= 250


def test_cmyk_tiff_black():
    pixels = _decoded_pixels(Image.new("CMYK", (4, 4), (0, 0, 0, 255)), "TIFF")
    assert (pixels == 0).all()


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (0, 0), (32896, 128)])
def test_sixteen_bit_greyscale(value, expected):
    image = Image.fromarray(np.full((4, 4), value, dtype=np.uint16))
    assert image.mode == "I;16"
    pixels = _decoded_pixels(image)
    assert np.abs(pixels.astype(int) - expected).max() <= 1


def test_dark_sixteen_bit_image_stays_dark():
    for value in (255, 256):
        image = Image.fromarray(np.full((4, 4), value, dtype=np.uint16))
        assert _decoded_pixels(image).max() <= 2, value


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = _encode(image, "JPEG", exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (40, 20)
    assert decode_image(data).size == (20, 40)


def test_exif_orientation_moves_pixels():
    array = np.full((20, 40, 3), 255, dtype=np.uint8)
    array[:, :20] = (0, 0, 0)  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(array), "JPEG", exif=exif.tobytes(), quality=95)
    pixels = np.asarray(decode_image(data)).astype(int)
    # Rotated 90 degrees clockwise: the left half becomes the top half.
    assert pixels[:15].mean() < 30
    assert pixels[25:].mean() > 225


def test_crop_box_parse():
    box = CropBox.parse("1, 2.5,30,40", relative=False)
    assert box == CropBox(1.0, 2.5, 30.0, 40.0, False, min_side=MIN_CROP_SIDE)
    assert CropBox.parse("0,0,1,1", relative=True).relative is True


@pytest.mark.parametrize("text", ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "1,2,,4"])
def test_crop_box_parse_errors(text):
    assert _code(CropBox.parse, text) == "bad_crop"


def test_pixel_crop():
    array = np.full((20, 40, 3), 255, dtype=np.uint8)
    array[2:12, 4:14] = (255, 0, 0)
    image = Image.fromarray(array)
    cropped = crop_image(image, CropBox(4, 2, 14, 12))
    assert cropped.size == (10, 10)
    assert (np.asarray(cropped) == (255, 0, 0)).all()
    assert crop_image(image, None) is image


def test_pixel_crop_of_a_large_jpeg_is_in_the_original_pixels():
    """Draft mode decodes a large JPEG at half size or less; a pixel box still means the
    file's pixels (it was judged against the decoded size: a 422 or the wrong region)."""
    array = np.full((1000, 1200, 3), 255, dtype=np.uint8)
    array[600:900, 700:1100] = (0, 0, 255)
    image = decode_image(_encode(Image.fromarray(array), "JPEG", quality=95))
    assert image.width < 1200 and original_size(image) == (1200, 1000)
    cropped = np.asarray(crop_image(image, CropBox(700, 600, 1100, 900)), dtype=float)
    assert cropped.shape[1] / cropped.shape[0] == pytest.approx(4 / 3, rel=0.02)
    assert cropped[..., 2].mean() > 240 and cropped[..., 0].mean() < 15
    assert _code(crop_image, image, CropBox(700, 600, 1201, 900)) == "bad_crop"


def test_tiny_client_crops_are_refused_with_a_hint_for_fractions():
    error = _error(CropBox.parse("0.1,0.1,0.9,0.9").to_pixels, 200, 100)
    assert error.code == "bad_crop" and "crop_units=relative" in error.message
    assert _code(CropBox.parse(f"0,0,{MIN_CROP_SIDE - 1},50").to_pixels, 200, 100) == "bad_crop"
    side = MIN_CROP_SIDE
    assert CropBox.parse(f"0,0,{side},{side}").to_pixels(200, 100) == (0, 0, side, side)
    # The service's own tiles of a small image may be smaller.
    assert CropBox(0, 0, 2 / 3, 1 / 3, relative=True).to_pixels(9, 12) == (0, 0, 6, 4)


def test_relative_crop():
    assert CropBox(0.25, 0.5, 0.75, 1.0, relative=True).to_pixels(200, 100) == (50, 50, 150, 100)
    red_right = np.zeros((20, 40, 3), dtype=np.uint8)
    red_right[:, 20:] = (255, 0, 0)
    out = preprocess(_encode(Image.fromarray(red_right)), CropBox(0.5, 0, 1, 1, relative=True))
    # 20x20 crop fills the whole input with red.
    np.testing.assert_allclose(out[0], WHITE, atol=1e-6)
    np.testing.assert_allclose(out[1], BLACK, atol=1e-6)


def test_crop_applies_to_the_oriented_image():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.new("RGB", (40, 20)), "JPEG", exif=exif.tobytes())
    # 20 wide x 40 tall after orientation: a box 30 tall fits, 30 wide does not.
    assert preprocess(data, CropBox(0, 0, 20, 30)).shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert _code(preprocess, data, CropBox(0, 0, 30, 20)) == "bad_crop"


@pytest.mark.parametrize(
    "box",
    [
        CropBox(-1, 0, 10, 10),
        CropBox(0, 0, 21, 10),
        CropBox(0, 0, 10, 11),
        CropBox(5, 5, 5, 8),
        CropBox(8, 5, 4, 9),
        CropBox(0, 0, 20, 7, min_side=MIN_CROP_SIDE),
        CropBox(math.nan, 0, 5, 5),
        CropBox(0, 0, math.inf, 5),
        CropBox(0.5, 0.5, 0.5, 0.9, relative=True),
        CropBox(0, 0, 1.1, 1, relative=True),
        CropBox(-0.1, 0, 1, 1, relative=True),
        CropBox(0, 0, math.nan, 1, relative=True),
    ],
)
def test_bad_crops(box):
    assert _code(box.to_pixels, 20, 10) == "bad_crop"


def test_too_many_pixels_from_limits():
    data = _encode(Image.new("RGB", (20, 20)))
    assert _code(decode_image, data, ImageLimits(max_pixels=399)) == "too_many_pixels"
    assert decode_image(data, ImageLimits(max_pixels=400)).size == (20, 20)


def test_decompression_bomb_is_refused(monkeypatch):
    data = _encode(Image.new("L", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    # Over 2x the bound Pillow raises; between 1x and 2x it warns.
    assert _code(decode_image, data) == "too_many_pixels"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    assert _code(decode_image, data) == "too_many_pixels"


def test_too_many_bytes():
    data = _encode(Image.new("RGB", (8, 8)))
    assert _code(decode_image, data, ImageLimits(max_bytes=len(data) - 1)) == "too_many_bytes"
    assert decode_image(data, ImageLimits(max_bytes=len(data))).size == (8, 8)


def test_empty():
    assert _code(decode_image, b"") == "empty"


def test_truncated_png():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise))
    assert _code(decode_image, data[: len(data) // 2]) == "undecodable"
    assert _code(decode_image, data[:20]) == "undecodable"


def test_random_bytes():
    data = random.Random(0).randbytes(4096)
    assert _code(preprocess, data) == "undecodable"


def test_real_tuxpaint_png_decodes_to_rgb():
    path = TUX_STAMPS / "animals/amphibians/frog.png"
    assert path.is_file()
    original = Image.open(path)
    assert original.mode == "RGBA"
    decoded = decode_image(path.read_bytes())
    assert decoded.mode == "RGB"
    assert decoded.size == original.size
    pixels = np.asarray(decoded)
    transparent = np.asarray(original)[..., 3] == 0
    assert transparent.any()
    assert (pixels[transparent] == 255).all()
    out = preprocess(path.read_bytes())
    assert out.shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert np.isfinite(out).all()
    assert out.min() < 0 < out.max()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{ } loop\n"


def test_formats_that_shell_out_are_never_opened(monkeypatch):
    """Pillow hands EPS to Ghostscript (an endless loop kept a core busy per request):
    only the accepted formats are tried, so no program is ever started."""
    started = []
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: started.append(a))
    error = _error(decode_image, EPS)
    assert error.code == "undecodable" and "JPEG, PNG, WebP, GIF, BMP or TIFF" in error.message
    assert started == []


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX"])
def test_formats_pillow_reads_but_the_service_does_not_are_refused(fmt):
    data = _encode(Image.new("RGB", (16, 16), (200, 30, 30)), fmt)
    assert Image.open(io.BytesIO(data)).format not in ACCEPTED_FORMATS
    assert _code(decode_image, data) == "undecodable"


@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_every_accepted_format_decodes(fmt):
    image = decode_image(_encode(Image.new("RGB", (24, 16), (10, 200, 30)), fmt))
    assert image.mode == "RGB" and image.size == (24, 16)


def test_decoder_errors_carry_no_paths():
    text = describe_error(OSError("gs -sOutputFile=/tmp/tmpab12/out.png /tmp/tmpab12/in.eps"))
    assert "/tmp" not in text and "<path>" in text


def test_an_image_bigger_than_the_decode_budget_is_refused_before_decoding():
    data = _encode(Image.new("RGBA", (600, 500)))
    need = decode_bytes("RGBA", (600, 500))
    error = _error(decode_image, data, ImageLimits(decode_memory_bytes=need - 1))
    assert error.code == "too_many_pixels" and "decode memory limit" in error.message
    assert decode_image(data, ImageLimits(decode_memory_bytes=need)).size == (600, 500)


def test_decodes_wait_for_the_budget_and_give_up_as_busy():
    budget = DecodeBudget(100)
    with budget.hold(60, wait_s=1.0):
        assert _code(lambda: budget.hold(50, wait_s=0.05).__enter__()) == "decoder_busy"
        with budget.hold(40, wait_s=0.05):
            assert budget.held == 100
    assert budget.held == 0
    with budget.hold(100, wait_s=0.05):
        pass
    assert _code(lambda: budget.hold(101, wait_s=1.0).__enter__()) == "too_many_pixels"


def test_sixteen_bit_images_cost_their_decoded_size_not_float64():
    """A 16-bit PNG is estimated (and decoded) at 3 bytes a pixel, not the 8+ of a float
    copy: at 2000x2000 that is 12 MB, which fits a 16 MiB budget."""
    values = np.tile(np.arange(2000, dtype=np.uint16) * 32, (2000, 1))
    data = _encode(Image.fromarray(values))
    assert decode_bytes("I;16", (2000, 2000)) < 16 * 2**20
    image = decode_image(data, ImageLimits(decode_memory_bytes=16 * 2**20))
    assert image.mode == "RGB" and min(image.size) >= REDUCED_SIDE
    grey = np.asarray(image)[..., 0].astype(int)
    expected = (values[0, :: 2000 // image.width][: image.width] >> 8).astype(int)
    assert np.abs(grey[0] - expected).max() <= 1


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "RGBA", "L"])
def test_large_images_are_reduced_like_a_whole_conversion(mode):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (1000, 1400), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (1000, 1400, 3), dtype=np.uint8)).convert(mode)
    reduced = reduce_large(image)
    assert reduced.size == (1400 // 2, 1000 // 2)
    reference = {"P": "RGBA", "1": "L"}.get(mode)
    if reference is not None:
        np.testing.assert_array_equal(reduced, image.convert(reference).reduce(2))
    elif mode == "I;16":
        expected = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8)).reduce(2)
        assert np.abs(np.asarray(reduced, int) - np.asarray(expected, int)).max() <= 1
    else:
        np.testing.assert_array_equal(reduced, image.reduce(2))


def test_original_size_is_the_oriented_file_size():
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image(_encode(Image.new("RGB", (1600, 1000)), "JPEG", exif=exif.tobytes()))
    assert original_size(image) == (1000, 1600)
    assert image.height > image.width and image.width < 1000
