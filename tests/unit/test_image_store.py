"""The on-disk image store and the demo corpus helpers."""

import json

import pytest

from streams.schemas import ID_PATTERN
from visearch.catalog.corpus import DEMO_CORPUS, CorpusError, find_images, image_id_for
from visearch.catalog.store import ImageStore, StoredImage, UnknownImageError, new_image_id


def _stored(image_id, owner="o", private=False, at=1.5):
    return StoredImage(image_id=image_id, owner_id=owner, private=private, uploaded_at=at)


def test_put_get_metadata(tmp_path):
    store = ImageStore(tmp_path / "images")
    image = _stored("cat-1", owner="alice", private=True)
    path = store.put(image, b"\x89PNG...")
    assert path == tmp_path / "images" / "cat-1.img"
    assert path.read_bytes() == b"\x89PNG..."
    assert store.get("cat-1") == b"\x89PNG..."
    assert store.metadata("cat-1") == image
    assert json.loads((tmp_path / "images" / "cat-1.json").read_text())["owner_id"] == "alice"
    assert "cat-1" in store
    assert "cat-2" not in store


def test_put_overwrites(tmp_path):
    store = ImageStore(tmp_path)
    store.put(_stored("a"), b"one")
    store.put(_stored("a", at=9.0), b"two")
    assert store.get("a") == b"two"
    assert store.metadata("a").uploaded_at == 9.0
    assert len(list(store)) == 1


def test_no_temporary_files_left(tmp_path):
    store = ImageStore(tmp_path)
    store.put(_stored("a"), b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img", "a.json"]


def test_iteration_is_sorted_and_complete(tmp_path):
    store = ImageStore(tmp_path)
    for image_id in ["b", "a.v2", "c_1", "a"]:
        store.put(_stored(image_id), image_id.encode())
    assert [image.image_id for image in store] == ["a", "a.v2", "b", "c_1"]
    assert store.get("a.v2") == b"a.v2"
    assert store.get("a") == b"a"


def test_unknown_id(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(UnknownImageError):
        store.get("missing")
    with pytest.raises(UnknownImageError):
        store.metadata("missing")
    assert isinstance(UnknownImageError("x"), KeyError)


def test_bytes_without_metadata_are_not_stored(tmp_path):
    store = ImageStore(tmp_path)
    (tmp_path / "half.img").write_bytes(b"incomplete")
    with pytest.raises(UnknownImageError):
        store.get("half")
    assert "half" not in store
    assert list(store) == []


@pytest.mark.parametrize(
    "image_id", ["../x", "../../etc/passwd", "a/b", "/abs", ".hidden", "", "a b", "x" * 129]
)
def test_invalid_ids_raise_unknown(tmp_path, image_id):
    store = ImageStore(tmp_path / "store")
    (tmp_path / "x.json").write_text(json.dumps(_stored("x").__dict__))
    (tmp_path / "x.img").write_bytes(b"outside")
    with pytest.raises(UnknownImageError):
        store.get(image_id)
    with pytest.raises(UnknownImageError):
        store.metadata(image_id)
    with pytest.raises(UnknownImageError):
        store.put(_stored(image_id), b"data")
    assert image_id not in store
    assert list((tmp_path / "store").iterdir()) == []


def test_id_with_trailing_newline_raises_unknown(tmp_path):
    with pytest.raises(UnknownImageError):
        ImageStore(tmp_path).path_of("cat\n")


def test_new_image_id_is_valid_and_unique():
    ids = {new_image_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(ID_PATTERN.fullmatch(image_id) for image_id in ids)


def test_image_id_for(tmp_path):
    root = tmp_path
    assert image_id_for(root / "animals/birds/cardinal.png", root) == "animals-birds-cardinal"
    assert image_id_for(root / "a b/c(1).jpg", root) == "a_b-c_1_"
    assert image_id_for(root / "_x/.y.png", root) == "x-.y"
    assert image_id_for(root / "é.png", root) == "image"
    long_id = image_id_for(root / ("d" * 100) / ("f" * 100 + ".png"), root)
    assert len(long_id) <= 128
    assert long_id.endswith("f" * 100)


@pytest.mark.parametrize(
    "relative",
    ["x.png", "-dash.png", "..dots.jpeg", "ünï/cödé.png", "a" * 300 + ".png", "sub/_-.png"],
)
def test_image_id_for_always_gives_a_valid_id(tmp_path, relative):
    assert ID_PATTERN.fullmatch(image_id_for(tmp_path / relative, tmp_path))


def test_image_id_for_outside_root_raises(tmp_path):
    with pytest.raises(ValueError):
        image_id_for(tmp_path.parent / "x.png", tmp_path)


def test_find_images(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.PNG").write_bytes(b"1")
    (tmp_path / "a.jpg").write_bytes(b"2")
    (tmp_path / "notes.txt").write_text("no")
    (tmp_path / "dir.png").mkdir()
    assert find_images(tmp_path) == [tmp_path / "a.jpg", tmp_path / "b" / "z.PNG"]


def test_find_images_errors(tmp_path):
    with pytest.raises(CorpusError, match="not a directory"):
        find_images(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(CorpusError, match="no images"):
        find_images(tmp_path)


def test_demo_corpus_ids_are_valid_and_unique():
    images = find_images(DEMO_CORPUS)
    assert len(images) > 100
    ids = [image_id_for(path, DEMO_CORPUS) for path in images]
    assert all(ID_PATTERN.fullmatch(image_id) for image_id in ids)
    assert "animals-amphibians-frog" in ids
    assert len(set(ids)) == len(ids)
