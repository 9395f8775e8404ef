"""The photo sets' sources: the fixed list, the photo filter, near-duplicates, the split."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visearch.evaluation.photo_sources import (
    SOURCE_PACKAGES,
    SPLITS,
    PackageSource,
    PhotoSourceError,
    catalogue,
    distinct_photos,
    dpkg_files,
    hamming,
    is_reserved,
    package_photos,
    perceptual_hash,
    photo_rejection,
    split_of,
)


def _photo(seed: int = 0, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """Blurry random shapes plus sensor noise: photo-like statistics."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    base = np.asarray(
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), dtype=np.float64
    )
    noise = rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _drawing(size: tuple[int, int] = (400, 300)) -> Image.Image:
    """Flat colour areas, as a drawn background has."""
    image = Image.new("RGB", size, (240, 200, 90))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 200, 160), fill=(30, 90, 200))
    draw.ellipse((220, 120, 360, 280), fill=(200, 40, 40))
    return image


def _bytes(image: Image.Image, fmt: str = "JPEG", quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def test_photo_filter_keeps_photos_and_rejects_the_rest() -> None:
    assert photo_rejection(_bytes(_photo())) is None
    assert photo_rejection(_bytes(_photo(), "PNG")) is None
    assert "format" in (photo_rejection(_bytes(_photo(), "GIF")) or "")
    assert "short side" in (photo_rejection(_bytes(_photo(size=(400, 200)))) or "")
    drawn = photo_rejection(_bytes(_drawing()))
    assert drawn is not None and ("colours" in drawn or "flat" in drawn)
    assert photo_rejection(b"not an image") == "undecodable"


def test_near_duplicates_share_a_hash_and_other_photos_do_not() -> None:
    original = _photo(1)
    variant = Image.open(io.BytesIO(_bytes(original.resize((300, 225)), quality=60)))
    other = _photo(2)
    h0, h1, h2 = (perceptual_hash(i) for i in (original, variant, other))
    assert hamming(h0, h1) <= 10 < hamming(h0, h2)
    kept, dropped = distinct_photos([h0, h2, h1])
    assert kept == [0, 1] and dropped == {2: 0}


def test_split_is_deterministic_disjoint_and_about_half() -> None:
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    splits = [split_of(s) for s in shas]
    assert splits == [split_of(s) for s in shas]
    assert set(splits) == set(SPLITS)
    assert 0.45 < splits.count("tune") / len(splits) < 0.55


def test_no_source_comes_from_a_reserved_package() -> None:
    for name in ("plasma-workspace-wallpapers", "gnome-backgrounds", "mate-backgrounds",
                 "ukui-wallpapers", "lomiri-wallpapers-20.04", "opencv-doc", "darknet",
                 "python3-skimage", "python-sklearn-doc", "palapeli-data",
                 "gcompris-qt-data", "stellarium-data"):  # fmt: skip
        assert is_reserved(name), name
    assert not any(is_reserved(s.package) for s in SOURCE_PACKAGES)
    with pytest.raises(PhotoSourceError, match="reserved"):
        package_photos([PackageSource("opencv-doc", ("/usr/*",))], lambda _: [])


def test_a_missing_package_is_a_clear_error() -> None:
    with pytest.raises(PhotoSourceError, match=r"not installed.*apt-get install"):
        dpkg_files("visearch-no-such-package")


def test_catalogue_filters_dedups_and_splits(tmp_path: Path) -> None:
    files = {
        "a.jpg": _bytes(_photo(1)),
        "a-small.jpg": _bytes(_photo(1).resize((320, 240)), quality=70),
        "b.png": _bytes(_photo(2), "PNG"),
        "drawn.png": _bytes(_drawing(), "PNG"),
        "copy.jpg": _bytes(_photo(1)),
        "skip.jpg": _bytes(_photo(3)),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    listed = [str(tmp_path / n) for n in sorted(files)] + [str(tmp_path)]
    source = PackageSource(
        "fake", (f"{tmp_path}/*.jpg", f"{tmp_path}/*.png"), (f"{tmp_path}/skip*",)
    )
    photos = package_photos([source], lambda package: listed)
    assert [Path(p.path).name for p in photos] == [
        "a-small.jpg",
        "a.jpg",
        "b.png",
        "copy.jpg",
        "drawn.png",
    ]
    cat = catalogue(photos)
    kept = {Path(photos[i].path).name for i in cat.kept}
    assert kept == {"a-small.jpg", "b.png"}
    statuses = {Path(r["path"]).name: r["status"] for r in cat.rows()}
    assert statuses["a.jpg"].startswith("duplicate of") and statuses["copy.jpg"].startswith(
        "duplicate"
    )
    assert statuses["drawn.png"].startswith("rejected")
    both = cat.split("tune") + cat.split("heldout")
    assert sorted(p.path for p in both) == sorted(photos[i].path for i in cat.kept)
    with pytest.raises(PhotoSourceError, match="split"):
        cat.split("train")
    with pytest.raises(PhotoSourceError, match="matches"):
        package_photos([PackageSource("fake", ("/nowhere/*.jpg",))], lambda package: listed)
