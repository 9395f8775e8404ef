"""Real photographs from Debian packages: the fixed source list, the filter, the split.

The photo evaluation sets (``visearch eval build photos``) are made from real
photographs that Debian bookworm ships inside packages, so that they build
offline on any machine where the Makefile installed those packages. The list
below was made by looking at every image of each candidate package (contact
sheets) and keeping only real photographs: no screenshots, renders, drawings,
icons or filter-effect variants. Each entry names a package and shell-style
patterns of its installed paths (``dpkg -L``); ``exclude`` names the files
that match but are not photographs.

Packages that are reserved for the independent evaluation are never used
(:data:`RESERVED_PACKAGES`): KDE/Plasma, GNOME, MATE, UKUI and Lomiri
wallpapers, opencv-doc, darknet, scikit-image and scikit-learn sample data,
Palapeli, GCompris and Stellarium. A test checks that no source comes from one.

What is kept is then decided by code, deterministically:

* :func:`photo_rejection` - JPEG or PNG, at least 240 px on the short side,
  enough distinct colours, not mostly flat (drawings have large flat areas);
* :func:`distinct_photos` - a 64-bit DCT perceptual hash; a photo within
  :data:`DUPLICATE_DISTANCE` bits of one kept earlier is the same photo
  (resized, recompressed or lightly edited) and is dropped;
* :func:`split_of` - ``tune`` or ``heldout`` from the SHA-256 of the file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from streams.errors import VisearchError

SPLITS = ("tune", "heldout")
PHOTO_FORMATS = ("JPEG", "PNG")
MIN_SHORT_SIDE = 240
MIN_COLOURS = 256  # distinct 5-bit colours of a 256 px thumbnail
MAX_FLAT = 0.45  # share of thumbnail pixels whose neighbours differ by <= 2 levels
MAX_TOP_COLOURS = 0.5  # share of the 8 most frequent 5-bit colours
DUPLICATE_DISTANCE = 10  # perceptual-hash bits (of 64) within which two photos are one
THUMBNAIL = 256

# Never a source: these packages' images belong to the independent evaluation.
RESERVED_PACKAGES = (
    "plasma-workspace-wallpapers",
    "kde-wallpapers",
    "gnome-backgrounds",
    "mate-backgrounds",
    "ukui-wallpapers",
    "lomiri-wallpapers",
    "opencv-doc",
    "darknet",
    "python3-skimage",
    "python-skimage-doc",
    "scikit-image",
    "python3-sklearn",
    "python-sklearn-doc",
    "scikit-learn",
    "palapeli-data",
    "gcompris-qt-data",
    "gcompris-data",
    "stellarium-data",
)
RESERVED_PREFIXES = ("plasma-", "kde-", "gnome-", "mate-", "ukui-", "lomiri-", "gcompris")

GIMP_IMAGES = "/usr/share/gimp/2.0/help/en/images"


@dataclass(frozen=True)
class PackageSource:
    """Photographs in one Debian package: path patterns, less the non-photos among them."""

    package: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    note: str = ""

    def select(self, paths: Iterable[str]) -> list[str]:
        """The package's files that match ``include`` and not ``exclude``, sorted."""
        return sorted(
            p
            for p in paths
            if any(fnmatch.fnmatchcase(p, pat) for pat in self.include)
            and not any(fnmatch.fnmatchcase(p, pat) for pat in self.exclude)
        )


# Checked by eye, package by package (bookworm). The filter below removes
# Scratch's drawn backgrounds; the exclusions are photos of drawings, art
# prints and handwriting that the filter cannot tell from photographs.
SOURCE_PACKAGES: tuple[PackageSource, ...] = (
    PackageSource(
        "scratch",
        ("/usr/share/scratch/Media/Backgrounds/*/*.jpg",),
        tuple(
            f"/usr/share/scratch/Media/Backgrounds/{name}"
            for name in (
                "Indoors/chalkboard.jpg",
                "Outdoors/brick-wall2.jpg",
                "Outdoors/graffiti.jpg",
            )
        ),
        note="Scratch 1.4 stage backgrounds: outdoor, nature, indoor and sports photos, "
        "480x360 (its drawn backgrounds fail the flatness filter)",
    ),
    PackageSource(
        "cimg-doc",
        ("/usr/share/doc/cimg-dev/html/img/postcard*.jpg",),
        tuple(
            f"/usr/share/doc/cimg-dev/html/img/postcard{n}.jpg"
            for n in (12, 33, 37, 41, 44, 51, 52, 55, 62, 66, 70, 71, 72, 73, 80)
        ),
        note="CImg's postcard photos: camera photos of postcards, often held in a hand "
        "(drawn cards, art prints and handwriting excluded)",
    ),
    PackageSource(
        "gimp-help-en",
        tuple(
            f"{GIMP_IMAGES}/{name}"
            for name in (
                "filters/examples/taj_orig.jpg",
                "filters/examples/blur/mean_curvature-ex-1.jpg",
                "filters/examples/colors-retinex1.png",
                "filters/examples/enhance/high-pass-origin.png",
                "filters/examples/kvitveis-orig.png",
                "filters/examples/map/little_planet-equirect.jpg",
                "tutorials/quickie-background-free-select.jpg",
                "tutorials/quickie-crop-example-source.jpg",
                "tutorials/quickie-flip-example-source.jpg",
                "tutorials/quickie-jpeg-100.jpg",
                "tutorials/quickie-remove-background-source.jpg",
                "tutorials/quickie-rotate-example-source.jpg",
                "tutorials/quickie-scale-example.jpg",
                "tutorials/tone-mapping/after-auto-stretch-contrast.jpg",
                "tutorials/tone-mapping/apple-orchard-truck-from-camera.jpg",
                "tutorials/tone-mapping/power-lines.jpg",
                "tutorials/tone-mapping/without-bilateral-smoothing-of-mask.jpg",
                "using/duck_orig.png",
                "using/fog-tree-example.png",
                "using/keyfob_orig.png",
                "using/threshold-fit.png",
                "toolbox/FG-select-select.png",
                "toolbox/cage-1.png",
            )
        ),
        note="GIMP manual: the original photo of each tutorial and filter example "
        "(its edited variants are left out by name and by the perceptual hash)",
    ),
    PackageSource(
        "libdlib19.1",
        (
            "/usr/share/doc/libdlib19.1/examples/faces/*.jpg",
            "/usr/share/doc/libdlib19.1/examples/mmod_cars_test_image*.jpg",
        ),
        (
            "/usr/share/doc/libdlib19.1/examples/faces/bald_guys.jpg",
            "/usr/share/doc/libdlib19.1/examples/faces/dogs.jpg",
        ),
        note="dlib examples: PASCAL VOC photos of people, a portrait, street photos "
        "(the collages bald_guys and dogs excluded)",
    ),
    PackageSource(
        "labelme-examples",
        (
            "/usr/share/doc/labelme-examples/examples/bbox_detection/data_annotated/*.jpg",
            "/usr/share/doc/labelme-examples/examples/classification/data_annotated/*.jpg",
            "/usr/share/doc/labelme-examples/examples/tutorial/apc2016_obj3.jpg",
            "/usr/share/doc/labelme-examples/examples/video_annotation/data_annotated/00000100.jpg",
        ),
        note="labelme examples: the unannotated photos (VOC, a cat, a dog, a shelf, a street)",
    ),
    PackageSource(
        "hugin-data",
        tuple(
            f"/usr/share/hugin/xrc/data/help_en_EN/{name}"
            for name in (
                "800px-C_Marchi-GrandCentral-adj.jpg",
                "AliasingPScubic_2x.jpg",
                "Big_ben_cylindrical.jpg",
                "CA_fringes00.jpg",
                "CA_strange01.jpg",
                "CA_tCA00.jpg",
                "Medinet_habu_horizontal_fisheye.jpg",
                "SB_Blended.jpg",
            )
        ),
        note="Hugin manual: panoramas and lens-defect example photos",
    ),
    PackageSource(
        "libjs-jquery-backstretch",
        ("/usr/share/doc/libjs-jquery-backstretch/examples/*.jpg",),
        note="jQuery Backstretch example backgrounds (photos at several sizes: one kept)",
    ),
    PackageSource(
        "libjs-jquery-slides",
        (
            "/usr/share/doc/libjs-jquery-slides/examples/Linking/img/*.jpg",
            "/usr/share/doc/libjs-jquery-slides/examples/Product/img/1144953-*-2x.jpg",
        ),
        note="SlidesJS examples: photo slides and product photos",
    ),
    PackageSource(
        "forensics-samples-files",
        ("/usr/share/forensics-samples/original-files/pic*/*",),
        note="forensics-samples: phone-camera photos",
    ),
)

# Photo cut-outs on white: distractors only (never sources), as many as needed.
STAMP_PACKAGE = PackageSource(
    "tuxpaint-stamps-default",
    ("/usr/share/tuxpaint/stamps/*.png", "/usr/share/tuxpaint/stamps/*.jpg"),
    note="Tux Paint stamps: photo cut-outs on white, the project's demo corpus",
)


class PhotoSourceError(VisearchError, RuntimeError):
    """A source package is missing or its files are not where the list says."""


def is_reserved(package: str) -> bool:
    """Whether ``package`` is one the independent evaluation reserves."""
    return package in RESERVED_PACKAGES or package.startswith(RESERVED_PREFIXES)


def dpkg_files(package: str) -> list[str]:
    """Paths that the installed ``package`` owns (``dpkg-query -L``); an error if absent."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-L", package], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise PhotoSourceError(
            "dpkg-query not found: the photo sets are built from Debian packages "
            "(Debian or Ubuntu, with the Makefile's DEBIAN_PACKAGES installed)"
        ) from None
    if result.returncode != 0:
        raise PhotoSourceError(
            f"Debian package {package} is not installed; the photo sets need it "
            f"(make system-deps, or apt-get install {package})"
        )
    return [line for line in result.stdout.splitlines() if line.startswith("/")]


@dataclass(frozen=True)
class PhotoFile:
    """One candidate file: its package, path, bytes' SHA-256 and the bytes."""

    package: str
    path: str
    sha256: str
    data: bytes = field(repr=False)


def package_photos(
    sources: Sequence[PackageSource] = SOURCE_PACKAGES,
    lister: Callable[[str], list[str]] = dpkg_files,
) -> list[PhotoFile]:
    """Every file the list names, in list order; a package that matches nothing is an error."""
    files: list[PhotoFile] = []
    for source in sources:
        if is_reserved(source.package):
            raise PhotoSourceError(f"{source.package} is reserved for the independent evaluation")
        paths = [p for p in source.select(lister(source.package)) if Path(p).is_file()]
        if not paths:
            raise PhotoSourceError(
                f"no file of package {source.package} matches {', '.join(source.include)}"
            )
        for path in paths:
            data = Path(path).read_bytes()
            files.append(PhotoFile(source.package, path, hashlib.sha256(data).hexdigest(), data))
    return files


def open_photo(data: bytes) -> Image.Image:
    """Decoded, EXIF-oriented RGB pixels of a photo file."""
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        oriented = ImageOps.exif_transpose(opened)
    if oriented.mode in ("RGBA", "LA", "P", "PA"):
        canvas = Image.new("RGB", oriented.size, (255, 255, 255))
        rgba = oriented.convert("RGBA")
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return oriented.convert("RGB")


def _thumbnail_array(image: Image.Image, side: int = THUMBNAIL) -> np.ndarray:
    small = image.copy()
    small.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(small.convert("RGB"), dtype=np.int16)


def flat_share(pixels: np.ndarray) -> float:
    """Share of pixels whose right and lower neighbours differ by <= 2 levels (all channels)."""
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        return 1.0
    dx = np.abs(np.diff(pixels, axis=1)).max(axis=2)[:-1, :]
    dy = np.abs(np.diff(pixels, axis=0)).max(axis=2)[:, :-1]
    return float(((dx + dy) <= 2).mean())


def colour_stats(pixels: np.ndarray) -> tuple[int, float]:
    """Distinct 5-bit colours, and the share of pixels in the 8 most frequent ones."""
    q = (pixels // 8).reshape(-1, 3).astype(np.int32)
    _, counts = np.unique(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2], return_counts=True)
    top = float(np.sort(counts)[::-1][:8].sum() / counts.sum())
    return len(counts), top


def photo_rejection(data: bytes) -> str | None:
    """Why ``data`` is not taken as a photograph (``None``: it is one).

    JPEG or PNG, >= 240 px on the short side, >= 256 distinct 5-bit colours,
    under 45 % flat pixels and under half of the pixels in 8 colours.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            fmt = opened.format
            size = opened.size
    except Exception:  # any undecodable file is simply not a photo
        return "undecodable"
    if fmt not in PHOTO_FORMATS:
        return f"format {fmt}"
    if min(size) < MIN_SHORT_SIDE:
        return f"short side {min(size)} < {MIN_SHORT_SIDE}"
    pixels = _thumbnail_array(open_photo(data))
    colours, top = colour_stats(pixels)
    if colours < MIN_COLOURS:
        return f"{colours} colours < {MIN_COLOURS}"
    if top >= MAX_TOP_COLOURS:
        return f"8 colours cover {top:.0%}"
    flat = flat_share(pixels)
    if flat >= MAX_FLAT:
        return f"{flat:.0%} flat"
    return None


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT hash: signs of the 8x8 lowest frequencies of a 32x32 grey image."""
    grey = np.asarray(
        image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64
    )
    n = 32
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    low = (basis @ grey @ basis.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def distinct_photos(
    hashes: Sequence[int], distance: int = DUPLICATE_DISTANCE
) -> tuple[list[int], dict[int, int]]:
    """Indices kept (first of each near-duplicate group) and dropped index -> kept index."""
    kept: list[int] = []
    dropped: dict[int, int] = {}
    for i, h in enumerate(hashes):
        match = next((k for k in kept if hamming(hashes[k], h) <= distance), None)
        if match is None:
            kept.append(i)
        else:
            dropped[i] = match
    return kept, dropped


def split_of(sha256: str) -> str:
    """``tune`` or ``heldout``: the parity of the first 8 hex digits of the file's SHA-256."""
    return SPLITS[int(sha256[:8], 16) % 2]


@dataclass(frozen=True)
class SourceCatalogue:
    """Every candidate with its fate: kept (and its split), rejected (why) or a duplicate."""

    files: list[PhotoFile]
    rejected: dict[int, str]
    duplicate_of: dict[int, int]
    kept: list[int]

    def split(self, name: str) -> list[PhotoFile]:
        """The distinct photos of one split, in list order."""
        if name not in SPLITS:
            raise PhotoSourceError(f"split must be one of {', '.join(SPLITS)}, not {name!r}")
        return [self.files[i] for i in self.kept if split_of(self.files[i].sha256) == name]

    def rows(self) -> list[dict[str, str]]:
        """One row per candidate (for ``--sources-out`` and the manifest)."""
        rows = []
        for i, f in enumerate(self.files):
            if i in self.rejected:
                status = f"rejected: {self.rejected[i]}"
            elif i in self.duplicate_of:
                status = f"duplicate of {self.files[self.duplicate_of[i]].path}"
            else:
                status = f"kept: {split_of(f.sha256)}"
            rows.append(
                {"package": f.package, "path": f.path, "sha256": f.sha256, "status": status}
            )
        return rows


def catalogue(files: Sequence[PhotoFile]) -> SourceCatalogue:
    """Filter, then drop near-duplicates (exact duplicates by SHA-256 first)."""
    rejected: dict[int, str] = {}
    candidates: list[int] = []
    hashes: list[int] = []
    duplicate_of: dict[int, int] = {}
    seen: dict[str, int] = {}
    for i, f in enumerate(files):
        if f.sha256 in seen:
            duplicate_of[i] = seen[f.sha256]
            continue
        seen[f.sha256] = i
        reason = photo_rejection(f.data)
        if reason is not None:
            rejected[i] = reason
            continue
        candidates.append(i)
        hashes.append(perceptual_hash(open_photo(f.data)))
    kept_local, dropped_local = distinct_photos(hashes)
    for local, match in dropped_local.items():
        duplicate_of[candidates[local]] = candidates[match]
    return SourceCatalogue(list(files), rejected, duplicate_of, [candidates[i] for i in kept_local])
