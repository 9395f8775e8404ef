"""``visearch eval build photos``: crop and edit queries on real photographs.

The set has the shape of the independent photo evaluation: a corpus of photo
sources, distractors and planted near-duplicates, and queries of twelve
kinds - hard crops (``crop-NNNN``) and the eleven edit kinds of
:mod:`.photo_edits` (``edit-KIND-NNNN``), so recall per kind can be read off
``per_query.tsv`` by the id's prefix.

* Photos: the distinct real photographs of :mod:`.photo_sources` that fall
  in the requested split (``tune`` or ``heldout``, by a hash of the file's
  content: never tune on ``heldout``). A seeded share of them (``source_share``)
  are sources, the others photo distractors.
* Planted near-duplicates: a light edit of ``duplicate_share`` of the sources
  (:func:`.photo_edits.near_duplicate`) placed in the corpus as an extra
  image, relevant too for every query of its source.
* Fill: Tux Paint stamps (photo cut-outs on white) until the corpus holds
  ``corpus_size`` images, or as many as there are. They are shared by both
  splits; they are never sources.
* Queries: ``crops`` hard crops (3-15 % of the area, not mostly flat, JPEG
  q70, :mod:`.crops`) and ``per_edit`` queries of each edit kind, spread
  over the sources round-robin in a seeded order.

Corpus ids are ``img-`` and the first 12 hex digits of the file's SHA-256,
so an id tells nothing of its role. ``manifest.json`` lists every corpus file
with its role, package, path and SHA-256, and every query with its kind,
source and edit parameters; the counts asked for and made are recorded, with
a note when the sources are too few for the defaults.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visearch.evaluation.crops import (
    JPEG_QUALITY,
    MAX_CROP_AREA,
    MIN_CROP_AREA,
    hard_crop,
    jpeg_bytes,
)
from visearch.evaluation.dataset import (
    CORPUS_DIR,
    QUERIES_DIR,
    EvalSetError,
    Qrels,
    link_or_copy,
    prepare_output,
    write_set,
)
from visearch.evaluation.photo_edits import EDIT_KINDS, edit_query, near_duplicate
from visearch.evaluation.photo_sources import (
    SOURCE_PACKAGES,
    SPLITS,
    STAMP_PACKAGE,
    PackageSource,
    PhotoFile,
    SourceCatalogue,
    catalogue,
    dpkg_files,
    flat_share,
    open_photo,
    package_photos,
)

CROP_SIDE = 2048  # sources are reduced to this long side before cropping
OTHER_SIDE = 768  # the other photos a patch or screenshot background comes from
MAX_CROP_FLAT = 0.6
MIN_CROP_STD = 8.0
CROP_ATTEMPTS = 20


@dataclass(frozen=True)
class PhotoSetOptions:
    """What to build; the defaults are sized like the independent evaluation."""

    split: str = "tune"
    seed: int = 0
    crops: int = 220
    per_edit: int = 20
    corpus_size: int = 1000
    source_share: float = 0.7
    duplicate_share: float = 0.1
    max_photos: int | None = None  # fewer photos (tests); None: all of the split


def _corpus_id(sha256: str) -> str:
    return f"img-{sha256[:12]}"


def _suffix(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as opened:
        return {"JPEG": ".jpg", "PNG": ".png"}.get(opened.format or "", ".png")


def _reduced(image: Image.Image, side: int) -> Image.Image:
    if max(image.size) > side:
        image = image.copy()
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def _open_reduced(data: bytes, side: int) -> Image.Image:
    return _reduced(open_photo(data), side)


def photo_crop(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, dict[str, Any]] | None:
    """A hard crop (:func:`.crops.hard_crop`) that is not mostly flat, as JPEG q70."""
    for _ in range(CROP_ATTEMPTS):
        box = hard_crop(image, rng)
        if box is None:
            return None
        left, top, right, bottom = box.to_pixels(*image.size)
        crop = image.crop((left, top, right, bottom))
        pixels = np.asarray(crop, dtype=np.int16)
        if flat_share(pixels) >= MAX_CROP_FLAT or float(pixels.std()) < MIN_CROP_STD:
            continue
        area = (right - left) * (bottom - top) / (image.width * image.height)
        params = {
            "box": [left, top, right, bottom],
            "of_size": list(image.size),
            "area": round(area, 4),
        }
        return jpeg_bytes(crop, JPEG_QUALITY), params
    return None


def _round_robin(count: int, order: Sequence[int]) -> list[int]:
    return [order[n % len(order)] for n in range(count)]


def build_photo_set(
    out: Path,
    options: PhotoSetOptions = PhotoSetOptions(),
    sources: Sequence[PackageSource] = SOURCE_PACKAGES,
    stamps: PackageSource | None = STAMP_PACKAGE,
    lister: Callable[[str], list[str]] = dpkg_files,
    sources_out: Path | None = None,
) -> dict[str, Any]:
    """Build the set in ``out`` (a new or empty folder); returns the manifest's summary."""
    if options.split not in SPLITS:
        raise EvalSetError(f"--split must be one of {', '.join(SPLITS)} for photos")
    if options.crops < 0 or options.per_edit < 0:
        raise EvalSetError("query counts must be >= 0")
    prepare_output(out)
    cat = catalogue(package_photos(sources, lister))
    if sources_out is not None:
        lines = ["package\tpath\tsha256\tstatus"]
        lines += ["\t".join(row.values()) for row in cat.rows()]
        sources_out.write_text("\n".join(lines) + "\n")
    builder = _PhotoSetBuilder(out, options)
    photos = builder.draw_photos(cat)
    n_sources = min(len(photos), max(1, round(len(photos) * options.source_share)))
    source_files, distractor_files = photos[:n_sources], photos[n_sources:]
    # The seeded generator is drawn from in this order: photos, duplicates,
    # stamps, query orders. Changing the order changes every set.
    source_ids = [builder.place(f, "source") for f in source_files]
    for f in distractor_files:
        builder.place(f, "distractor")
    duplicates = builder.plant_duplicates(source_files, source_ids)
    stamp_shortfall = builder.fill_with_stamps(stamps, lister) if stamps is not None else 0
    qrels, queries, failed = builder.make_queries(photos, source_files, source_ids, duplicates)

    kinds = ("crop", *EDIT_KINDS)
    made_per_kind = {kind: sum(1 for q in queries.values() if q["kind"] == kind) for kind in kinds}
    notes = []
    asked = options.crops + options.per_edit * len(EDIT_KINDS)
    if n_sources * 2 < asked:
        notes.append(
            f"{n_sources} sources for {asked} queries: "
            "several queries per source (crops at different places, different edit kinds)"
        )
    if stamp_shortfall:
        notes.append(
            f"corpus {options.corpus_size} asked for; {stamp_shortfall} too few distractors"
        )
    roles = [entry["role"] for entry in builder.corpus]
    summary = {
        "split": options.split,
        "distinct_photos_in_split": len(cat.split(options.split)),
        "sources": n_sources,
        "photo_distractors": len(distractor_files),
        "near_duplicates": len(duplicates),
        "stamps": roles.count("stamp"),
        "corpus": len(builder.corpus),
        "queries_per_kind": made_per_kind,
    }
    manifest = {
        "builder": "photos",
        "seed": options.seed,
        "options": {
            "crops": options.crops,
            "per_edit": options.per_edit,
            "corpus_size": options.corpus_size,
            "source_share": options.source_share,
            "duplicate_share": options.duplicate_share,
            "max_photos": options.max_photos,
        },
        **summary,
        "notes": notes,
        "crop_area": [MIN_CROP_AREA, MAX_CROP_AREA],
        "crop_jpeg_quality": JPEG_QUALITY,
        "failed_queries": failed,
        "packages": {s.package: {"include": list(s.include), "note": s.note} for s in sources},
        "candidates": {
            "files": len(cat.files),
            "rejected": len(cat.rejected),
            "duplicates": len(cat.duplicate_of),
            "distinct": len(cat.kept),
        },
        "corpus_files": builder.corpus,
        "queries": queries,
    }
    write_set(out, qrels, manifest)
    return summary


class _PhotoSetBuilder:
    """The corpus and queries of one photo set, drawn from one seeded generator."""

    def __init__(self, out: Path, options: PhotoSetOptions) -> None:
        self.out = out
        self.options = options
        self.split_index = SPLITS.index(options.split)
        self.rng = np.random.default_rng([options.seed, self.split_index])
        self.corpus: list[dict[str, Any]] = []

    def draw_photos(self, cat: SourceCatalogue) -> list[PhotoFile]:
        """The split's photos in a seeded order, at most ``max_photos``."""
        photos = sorted(cat.split(self.options.split), key=lambda f: f.sha256)
        photos = [photos[int(i)] for i in self.rng.permutation(len(photos))]
        if self.options.max_photos is not None:
            photos = photos[: self.options.max_photos]
        if not photos:
            raise EvalSetError(f"no photo falls in the {self.options.split} split")
        return photos

    def place(self, file: PhotoFile, role: str) -> str:
        """Link ``file`` into the corpus under its content id; returns the id."""
        image_id = _corpus_id(file.sha256)
        if any(entry["id"] == image_id for entry in self.corpus):
            raise EvalSetError(f"two corpus files share the id {image_id} ({file.path})")
        link_or_copy(Path(file.path), self.out / CORPUS_DIR / f"{image_id}{_suffix(file.data)}")
        self.corpus.append(
            {
                "id": image_id,
                "role": role,
                "package": file.package,
                "path": file.path,
                "sha256": file.sha256,
            }
        )
        return image_id

    def plant_duplicates(
        self, source_files: list[PhotoFile], source_ids: list[str]
    ) -> dict[int, str]:
        """Near-duplicates of a seeded share of the sources: source index -> its id."""
        options, n_sources = self.options, len(source_files)
        n_duplicates = round(n_sources * options.duplicate_share)
        if options.duplicate_share > 0 and n_duplicates == 0 and n_sources >= 2:
            n_duplicates = 1
        duplicates: dict[int, str] = {}
        for index in sorted(
            int(i) for i in self.rng.choice(n_sources, size=n_duplicates, replace=False)
        ):
            dup_rng = np.random.default_rng([options.seed, self.split_index, 1, index])
            image = _open_reduced(source_files[index].data, CROP_SIDE)
            data, params = near_duplicate(image, dup_rng)
            sha = hashlib.sha256(data).hexdigest()
            dup_id = _corpus_id(sha)
            (self.out / CORPUS_DIR / f"{dup_id}.jpg").write_bytes(data)
            duplicates[index] = dup_id
            self.corpus.append(
                {
                    "id": dup_id,
                    "role": "near-duplicate",
                    "of": source_ids[index],
                    "package": source_files[index].package,
                    "path": source_files[index].path,
                    "sha256": sha,
                    "source_sha256": source_files[index].sha256,
                    "edit": params,
                }
            )
        return duplicates

    def fill_with_stamps(self, stamps: PackageSource, lister: Callable[[str], list[str]]) -> int:
        """Tux Paint stamps up to ``corpus_size``; returns how many were missing."""
        fill = self.options.corpus_size - len(self.corpus)
        if fill <= 0:
            return 0
        used = {entry["id"] for entry in self.corpus}
        pool: dict[str, PhotoFile] = {}
        for f in package_photos([stamps], lister):
            if _corpus_id(f.sha256) not in used and f.sha256 not in pool:
                pool[f.sha256] = f
        ordered = [pool[s] for s in sorted(pool)]
        picked = sorted(
            int(i) for i in self.rng.choice(len(ordered), min(fill, len(ordered)), replace=False)
        )
        for i in picked:
            self.place(ordered[i], "stamp")
        return max(0, fill - len(picked))

    def make_queries(
        self,
        photos: list[PhotoFile],
        source_files: list[PhotoFile],
        source_ids: list[str],
        duplicates: dict[int, str],
    ) -> tuple[Qrels, dict[str, dict[str, Any]], list[str]]:
        """Crops and edits, source by source (each source decoded once): qrels,
        the queries' descriptions, and the queries that could not be made."""
        options, n_sources = self.options, len(source_files)
        crop_order = [int(i) for i in self.rng.permutation(n_sources)]
        edit_order = [int(i) for i in self.rng.permutation(n_sources)]
        jobs: dict[int, list[tuple[str, str, int]]] = {i: [] for i in range(n_sources)}
        for n, src in enumerate(_round_robin(options.crops, crop_order)):
            jobs[src].append((f"crop-{n:04d}", "crop", n))
        edit_sources = _round_robin(options.per_edit * len(EDIT_KINDS), edit_order)
        for k, kind in enumerate(EDIT_KINDS):
            for n in range(options.per_edit):
                src = edit_sources[n * len(EDIT_KINDS) + k]
                jobs[src].append((f"edit-{kind}-{n:04d}", kind, n))
        others = [_open_reduced(f.data, OTHER_SIDE) for f in photos]
        qrels: Qrels = {}
        queries: dict[str, dict[str, Any]] = {}
        failed: list[str] = []
        for src, todo in jobs.items():
            if not todo:
                continue
            image = _open_reduced(source_files[src].data, CROP_SIDE)
            for query, kind, n in todo:
                code = 0 if kind == "crop" else 1 + EDIT_KINDS.index(kind)
                seed_key = [options.seed, self.split_index, 2, code, n]
                query_rng = np.random.default_rng(seed_key)
                if kind == "crop":
                    made = photo_crop(image, query_rng)
                    if made is None:
                        failed.append(query)
                        continue
                    data, params = made
                else:
                    candidates = [i for i in range(len(photos)) if i != src] or [src]
                    other = candidates[int(query_rng.integers(0, len(candidates)))]
                    data, params = edit_query(kind, image, query_rng, others[other])
                    if kind in ("patch", "screenshot"):
                        params["other_sha256"] = photos[other].sha256
                (self.out / QUERIES_DIR / f"{query}.jpg").write_bytes(data)
                relevant = {source_ids[src]: 1}
                if src in duplicates:
                    relevant[duplicates[src]] = 1
                qrels[query] = relevant
                queries[query] = {
                    "kind": kind,
                    "source": source_ids[src],
                    "seed": seed_key,
                    "params": params,
                }
        return qrels, queries, failed
