"""Set builders: deterministic under a seed, the documented sizes, qrels that fit the files."""

import hashlib
import shutil

import pytest
from PIL import Image

from encoders.preprocess import decode_image
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.evaluation.classes import (
    FASHION_LABELS,
    FASHION_MNIST,
    build_fashion_mnist_set,
    build_folder_class_set,
)
from visearch.evaluation.crops import MAX_CROP_AREA, MIN_CROP_AREA, build_crop_set
from visearch.evaluation.dataset import EvalSetError, load_set_dir
from visearch.evaluation.edits import build_edit_set


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """12 real photos in 3 category folders; two share a file name, one is a duplicate."""
    if not DEMO_CORPUS.is_dir():
        pytest.fail(f"{DEMO_CORPUS} is missing: run `make test` (it installs the photos)")
    root = tmp_path_factory.mktemp("source")
    photos = [p for p in find_images(DEMO_CORPUS) if p.suffix == ".png"][::60][:12]
    for i, photo in enumerate(photos):
        target = root / ("animals", "food", "town")[i % 3] / f"photo{i // 3}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
    (root / "tiny").mkdir()
    shutil.copyfile(photos[0], root / "tiny" / "copy-of-first.png")  # same pixels as one above
    return root


def _digest(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_crop_set_is_deterministic_and_crops_are_hard(source, tmp_path):
    assert build_crop_set(source, tmp_path / "a", seed=3) == 13
    build_crop_set(source, tmp_path / "b", seed=3)
    build_crop_set(source, tmp_path / "c", seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    loaded = load_set_dir(tmp_path / "a")
    assert sorted(loaded.corpus) == sorted(
        ["tiny-copy-of-first"]
        + [f"{c}-photo{i}" for c in ("animals", "food", "town") for i in range(4)]
    )
    for query, judged in loaded.qrels.items():
        source_id = query.removesuffix("-crop")
        original = decode_image(loaded.corpus[source_id].read_bytes())
        crop = Image.open(loaded.queries[query])
        assert crop.format == "JPEG"
        area = crop.width * crop.height / (original.width * original.height)
        assert MIN_CROP_AREA * 0.9 <= area <= MAX_CROP_AREA * 1.1
        assert source_id in judged
    # Exact pixel duplicates are both right answers.
    assert set(loaded.qrels["tiny-copy-of-first-crop"]) == {"tiny-copy-of-first", "animals-photo0"}


def test_edit_set_records_edits_and_holds_out_negatives(source, tmp_path):
    judged = build_edit_set(source, tmp_path / "a", count=5, negatives=2, seed=1)
    build_edit_set(source, tmp_path / "b", count=5, negatives=2, seed=1)
    assert judged == 5
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    loaded = load_set_dir(tmp_path / "a")
    assert len(loaded.corpus) == 13 - 2 and len(loaded.queries) == 5 + 2
    negatives = [q for q in loaded.queries if q.startswith("negative-")]
    assert len(negatives) == 2 and not set(negatives) & set(loaded.qrels)
    manifest = (tmp_path / "a" / "manifest.json").read_text()
    assert '"builder": "edits"' in manifest and "jpeg" in manifest


def test_folder_classes_are_leave_one_out(source, tmp_path):
    queries = build_folder_class_set(source, tmp_path / "set", min_class=4, seed=0)
    loaded = load_set_dir(tmp_path / "set")
    assert queries == 12 and "tiny-copy-of-first" not in loaded.corpus  # class of 1 left out
    assert loaded.qrels["food-photo2"] == {"food-photo0": 1, "food-photo1": 1, "food-photo3": 1}
    assert set(loaded.queries) == set(loaded.corpus)
    with pytest.raises(EvalSetError, match="not empty"):
        build_folder_class_set(source, tmp_path / "set", min_class=4)
    with pytest.raises(EvalSetError, match="holds 50 or more"):
        build_folder_class_set(source, tmp_path / "other", min_class=50)


def test_fashion_mnist_set_is_class_balanced(tmp_path):
    if not FASHION_MNIST.is_dir():
        pytest.fail(f"{FASHION_MNIST} is missing: run `make test` (it installs it)")
    queries = build_fashion_mnist_set(tmp_path / "a", per_class=3, count=7, seed=2)
    build_fashion_mnist_set(tmp_path / "b", per_class=3, count=7, seed=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    loaded = load_set_dir(tmp_path / "a")
    assert queries == 7 and len(loaded.corpus) == 3 * len(FASHION_LABELS)
    assert all(len(judged) == 2 for judged in loaded.qrels.values())
    image = Image.open(next(iter(loaded.corpus.values())))
    assert image.size == (28, 28) and image.mode == "L"
