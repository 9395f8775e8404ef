"""Crop verification: a crop of a real photo is recognised among look-alike candidates."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from encoders.preprocess import decode_image
from index import crop_verify
from index.crop_verify import CropVerifier, block_agreement, query_pixels
from index.partition import Hit
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.evaluation.crops import WHITE_LEVEL, hard_crop, jpeg_bytes
from visearch.evaluation.photo_edits import patch


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Eight real photos with content to crop, by id."""
    if not DEMO_CORPUS.is_dir():
        pytest.fail(f"{DEMO_CORPUS} is missing: run `make test` (it installs the photos)")
    paths = [p for p in find_images(DEMO_CORPUS) if p.suffix == ".png"]
    picked = [p for p in paths[::40] if min(Image.open(p).size) >= 96][:8]
    assert len(picked) == 8
    return {f"photo-{i}": path for i, path in enumerate(picked)}


# Grey-level standard deviation a test crop must have (0-255 scale).
MIN_CROP_TEXTURE = 8.0


def _hits(ids: list[str]) -> list[Hit]:
    return [Hit(image_id, 0.8 - 0.01 * i) for i, image_id in enumerate(ids)]


def _crop_query(path: Path, seed: int, rescale: float = 1.0) -> Image.Image:
    """A seeded hard crop of the photo with texture in it: ``hard_crop`` only keeps
    off white background, and a crop of one flat colour (clip art has them) matches
    anywhere of that colour, so no verifier could place it."""
    image = decode_image(path.read_bytes())
    rng = np.random.default_rng(seed)
    for _ in range(20):
        box = hard_crop(image, rng)
        assert box is not None
        crop = image.crop(box.to_pixels(*image.size))
        if np.asarray(crop.convert("L"), dtype=np.float32).std() >= MIN_CROP_TEXTURE:
            break
    else:
        pytest.fail(f"no textured crop of {path}")
    if rescale != 1.0:
        size = (round(crop.width * rescale), round(crop.height * rescale))
        crop = crop.resize(size, Image.Resampling.BILINEAR)
    return decode_image(jpeg_bytes(crop))


def test_the_source_of_a_hard_crop_moves_first_and_the_rest_keep_their_order(
    photos: dict[str, Path],
) -> None:
    verifier = CropVerifier(photos.__getitem__, top=8)
    ids = list(photos)
    for seed, source in enumerate(ids[2:6]):
        image = _crop_query(photos[source], seed)
        hits = _hits(ids)
        reranked, verified = verifier.rerank(query_pixels(image), hits)
        assert verified == 1
        assert reranked[0].image_id == source and 1.9 <= reranked[0].score <= 2.0
        assert [h for h in reranked[1:]] == [h for h in hits if h.image_id != source]


def test_a_query_that_is_no_crop_of_any_candidate_changes_nothing(
    photos: dict[str, Path],
) -> None:
    verifier = CropVerifier(photos.__getitem__, top=8)
    ids = list(photos)
    image = _crop_query(photos[ids[0]], seed=1)
    hits = _hits(ids[1:])  # the source is not among the candidates
    assert verifier.rerank(query_pixels(image), hits) == (hits, 0)
    thumbnails = len(verifier._cache)
    # a whole photo, as large as any candidate: it fits inside none of them
    largest = max(max(Image.open(photos[i]).size) for i in ids[2:])
    buffer = io.BytesIO()
    decode_image(photos[ids[1]].read_bytes()).resize((largest + 1, largest + 1)).save(buffer, "PNG")
    whole = buffer.getvalue()
    hits = _hits(ids[2:])
    fresh = CropVerifier(photos.__getitem__, top=8)
    assert fresh.rerank(query_pixels(decode_image(whole)), hits) == (hits, 0)
    assert thumbnails > 0 and len(fresh._cache) == 0  # the headers said no: nothing decoded


def test_only_the_top_candidates_are_checked(photos: dict[str, Path]) -> None:
    ids = list(photos)
    image = _crop_query(photos[ids[7]], seed=3)
    hits = _hits(ids)  # the source is 8th
    assert CropVerifier(photos.__getitem__, top=7).rerank(query_pixels(image), hits) == (
        hits,
        0,
    )
    reranked, verified = CropVerifier(photos.__getitem__, top=8).rerank(query_pixels(image), hits)
    assert verified == 1 and reranked[0].image_id == ids[7]


def test_rescaled_crops_need_the_scale_search(photos: dict[str, Path]) -> None:
    ids = list(photos)
    image = _crop_query(photos[ids[4]], seed=5, rescale=1.3)
    pixels = query_pixels(image)
    native, found_native = CropVerifier(photos.__getitem__, top=8).rerank(pixels, _hits(ids))
    scaled, found_scaled = CropVerifier(photos.__getitem__, top=8, scales=7).rerank(
        pixels, _hits(ids)
    )
    assert found_native == 0 and native[0].image_id == ids[0]
    assert found_scaled == 1 and scaled[0].image_id == ids[4]


def test_a_large_jpeg_decoded_at_reduced_scale_is_matched_in_original_pixels(
    photos: dict[str, Path], tmp_path: Path
) -> None:
    """Candidates and queries are JPEG-decoded at reduced scale; both return to file pixels."""
    source = decode_image(next(iter(photos.values())).read_bytes())
    large = source.resize((source.width * 8, source.height * 8), Image.Resampling.BICUBIC)
    path = tmp_path / "large.jpg"
    large.save(path, quality=90)
    width, height = large.size
    crop = large.crop((width // 3, height // 3, width // 3 + width // 4, height // 3 + height // 4))
    data = jpeg_bytes(crop)
    image = decode_image(data)
    assert decode_image(path.read_bytes()).width < width  # the candidate is drafted
    files = {"large": path, **dict(list(photos.items())[1:])}
    reranked, verified = CropVerifier(files.__getitem__, top=8).rerank(
        query_pixels(image), _hits([*list(files)[1:], "large"])
    )
    assert verified == 1 and reranked[0].image_id == "large"


def test_missing_or_unreadable_candidates_are_skipped_and_a_changed_file_is_reread(
    photos: dict[str, Path], tmp_path: Path
) -> None:
    ids = list(photos)
    target = tmp_path / "replaced.png"
    target.write_bytes(photos[ids[0]].read_bytes())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    files = {"replaced": target, "broken": broken}
    verifier = CropVerifier(files.__getitem__, top=8)
    image = _crop_query(photos[ids[0]], seed=2)
    hits = _hits(["unknown", "broken", "replaced"])
    reranked, verified = verifier.rerank(query_pixels(image), hits)
    assert verified == 1 and reranked[0].image_id == "replaced"

    # a re-upload under the same id: the cached thumbnail must not be reused
    buffer = io.BytesIO()
    Image.open(photos[ids[1]]).save(buffer, format="PNG")
    target.write_bytes(buffer.getvalue())
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert verifier.rerank(query_pixels(image), hits) == (hits, 0)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="top and scales"):
        CropVerifier(lambda image_id: Path(image_id), top=0)
    with pytest.raises(ValueError, match="min_score"):
        CropVerifier(lambda image_id: Path(image_id), min_score=1.5)


def test_an_exif_rotated_candidate_is_matched_as_displayed_and_broken_exif_is_no_error(
    photos: dict[str, Path], tmp_path: Path
) -> None:
    shown = decode_image(list(photos.values())[2].read_bytes())
    shown = shown.resize((shown.width * 4, shown.height * 3), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displayed after a 90 degree turn
    stored = tmp_path / "rotated.jpg"
    shown.transpose(Image.Transpose.ROTATE_90).save(stored, quality=92, exif=exif.tobytes())
    displayed = decode_image(stored.read_bytes())
    assert (
        (displayed.width > displayed.height)
        == (shown.width > shown.height)
        != (Image.open(stored).width > Image.open(stored).height)
    )  # the file's pixels are stored turned; decoding turns them back
    width, height = shown.size
    crop = jpeg_bytes(shown.crop((width // 4, height // 4, width // 2, height // 2)))
    files = {"rotated": stored, **dict(list(photos.items())[3:])}
    hits = _hits([*list(files)[1:], "rotated"])
    verifier = CropVerifier(files.__getitem__, top=8)
    reranked, verified = verifier.rerank(query_pixels(decode_image(crop)), hits)
    assert verified == 1 and reranked[0].image_id == "rotated"

    broken = bytearray(crop)
    marker = broken.find(b"\xff\xdb")  # a fake APP1 "Exif" segment of garbage before the tables
    broken[marker:marker] = b"\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff"
    data = bytes(broken)
    assert verifier.rerank(query_pixels(decode_image(data)), hits)[0][0].image_id in files


def test_a_second_pass_of_one_query_reuses_its_matches(photos: dict[str, Path]) -> None:
    """The search fetches again when the collapse leaves too few results: the
    candidates already matched are not matched again, and the ranking is the same."""
    from index.crop_verify import QueryVerification

    looked_up: list[str] = []

    def path_of(image_id: str) -> Path:
        looked_up.append(image_id)
        return photos[image_id]

    ids = list(photos)
    image = _crop_query(photos[ids[3]], seed=3)
    verification = QueryVerification(CropVerifier(path_of, top=8), query_pixels(image))
    first = verification(_hits(ids[:5]))
    assert sorted(looked_up) == sorted(ids[:5])
    second = verification(_hits(ids))  # a bigger fetch: three new candidates
    assert sorted(looked_up) == sorted(ids)  # each matched once over both passes
    assert first[0].image_id == second[0].image_id == ids[3]
    assert verification.verified == 1 and set(verification.matches) == set(ids)


def _white_share(path: Path) -> float:
    """The share of a photo's pixels that are white background."""
    pixels = np.asarray(decode_image(path.read_bytes()))
    return float((pixels.min(axis=2) >= WHITE_LEVEL).mean())


def _patched_copy(source: Path, other: Path, seed: int) -> Image.Image:
    """``source`` with a piece of ``other`` (10-30 % of its area) pasted on, as JPEG q75."""
    image, foreign = decode_image(source.read_bytes()), decode_image(other.read_bytes())
    while True:  # a large patch: the case one whole-image correlation misses
        patched, params = patch(image, np.random.default_rng(seed), foreign)
        if params["area"] >= 0.2:
            return decode_image(jpeg_bytes(patched, quality=75))
        seed += 100


def test_a_copy_with_a_pasted_patch_is_verified_by_its_blocks_and_the_patch_source_is_not(
    photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = list(photos)
    # Sources mostly content: on clip art mostly white (a narrow guitar, 56 %; a
    # thermometer, 89 %) too few blocks hold anything to agree, and the block
    # score misses the patched copy (0.69 against 0.9 for the guitar).
    sources = [i for i in ids if _white_share(photos[i]) <= 0.5][:3]
    assert len(sources) == 3
    pairs = [(sources[0], ids[2]), (sources[1], ids[5]), (sources[2], ids[0])]
    for seed, (source, other) in enumerate(pairs):
        query = query_pixels(_patched_copy(photos[source], photos[other], seed))
        hits = _hits([other, *(i for i in ids if i not in (source, other)), source])
        reranked, verified = CropVerifier(photos.__getitem__, top=8).rerank(query, hits)
        assert verified == 1 and reranked[0].image_id == source, seed
        # the same query without the block scoring: the foreign part spoils the correlation
        with monkeypatch.context() as patched:
            patched.setattr(crop_verify, "BLOCK_MIN_AREA", 2.0)
            plain, found = CropVerifier(photos.__getitem__, top=8).rerank(query, hits)
        assert found == 0 and plain == hits, seed


def test_block_agreement_counts_the_agreeing_share_and_ignores_flat_blocks() -> None:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (192, 256)).astype(np.float32), (0, 0), 2)
    noisy = texture + rng.normal(0, 2, texture.shape).astype(np.float32)
    assert block_agreement(texture, noisy) > 0.95
    covered = noisy.copy()
    covered[:, : int(0.6 * 256)] = rng.uniform(0, 255, (192, int(0.6 * 256)))  # 60 % foreign
    assert block_agreement(texture, covered) < 0.5
    covered = noisy.copy()
    covered[:, : int(0.3 * 256)] = rng.uniform(0, 255, (192, int(0.3 * 256)))  # 30 % foreign
    assert block_agreement(texture, covered) > 0.95
    assert block_agreement(np.full_like(texture, 128), np.full_like(texture, 128)) == -1.0
    assert block_agreement(texture[:40, :40], noisy[:40, :40]) == -1.0  # blocks under 8 px
    assert block_agreement(texture, np.fliplr(texture).copy()) < 0.5


def test_coarse_to_fine_finds_the_full_search_match_of_a_crop(photos: dict[str, Path]) -> None:
    """The half-size search plus a few pixels at full size gives the full search's answer."""
    verifier = CropVerifier(photos.__getitem__, top=8)
    for seed, source in enumerate(list(photos)[:6]):
        query = query_pixels(_crop_query(photos[source], seed))
        key = (source, photos[source].stat().st_mtime_ns)
        candidate = verifier._load(photos[source], key)
        assert candidate is not None
        factor = candidate.scale / query.scale
        size = (round(query.grey.shape[1] * factor), round(query.grey.shape[0] * factor))
        template = cv2.resize(query.grey, size, interpolation=cv2.INTER_AREA)
        grey = candidate.grey.astype(np.float32)
        full = float(cv2.matchTemplate(grey, template, cv2.TM_CCOEFF_NORMED).max())
        assert min(size) >= 2 * crop_verify.MIN_TEMPLATE_SIDE  # the coarse path ran
        assert crop_verify.best_match(query, candidate, [1.0]) == pytest.approx(full, abs=0.005)


def test_candidate_sizes_are_read_once_per_file_version(
    photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A PNG's orientation costs a full decode (its EXIF may follow the pixels): once."""
    photos = {i: Path(shutil.copy(path, tmp_path / path.name)) for i, path in photos.items()}
    reads: list[Path] = []
    real = crop_verify.oriented_size
    monkeypatch.setattr(crop_verify, "oriented_size", lambda p: reads.append(p) or real(p))
    ids = list(photos)
    whole = query_pixels(decode_image(photos[ids[0]].read_bytes()).resize((2000, 2000)))
    verifier = CropVerifier(photos.__getitem__, top=8)
    for _ in range(3):  # fits no candidate: nothing decoded, each header read once
        assert verifier.rerank(whole, _hits(ids)) == (_hits(ids), 0)
    assert sorted(reads) == sorted(photos.values())
    os.utime(photos[ids[3]], ns=(1, 1))  # a new version of one file is read again
    verifier.rerank(whole, _hits(ids))
    assert len(reads) == len(ids) + 1 and reads[-1] == photos[ids[3]]


def test_a_query_is_resized_once_per_candidate_size(
    photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidates of one size share the query's templates, and score as if each made its own."""
    verifier = CropVerifier(photos.__getitem__, top=8)
    source = next(iter(photos))
    candidate = verifier._load(photos[source], (source, 0))
    assert candidate is not None
    query = query_pixels(_crop_query(photos[source], 3))
    alone = crop_verify.best_match(query, candidate, [1.0])  # templates of its own
    resizes: list[tuple[int, int]] = []
    real = cv2.resize
    monkeypatch.setattr(
        crop_verify.cv2,
        "resize",
        lambda image, size, **kw: resizes.append(size) or real(image, size, **kw),
    )
    templates = crop_verify.QueryTemplates(query)
    scores = [crop_verify.best_match(query, candidate, [1.0], templates) for _ in range(5)]
    assert scores == [alone] * 5 and alone > 0.9  # the crop's source, found alike each time
    halved = (candidate.grey.shape[1] // 2, candidate.grey.shape[0] // 2)
    of_the_query = [size for size in resizes if size != halved]  # not the candidate halved
    assert len(of_the_query) == 2  # the template and its half, once for the five
