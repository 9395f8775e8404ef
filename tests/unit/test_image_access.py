"""Which stored images the corpus listing shows: the store's own rules, and kept
copies of Kafka uploads only while the index holds them visible, asked in one batch."""

from __future__ import annotations

from collections.abc import Sequence

from encoders.preprocess import ImageLimits
from visearch.catalog.access import ImageAccess
from visearch.catalog.store import ORIGIN_LOG, ImageStore, StoredImage


class IndexAnswering:
    """The search service's visibility answer for kept copies (pure logic under test)."""

    def __init__(self, visible: set[str]) -> None:
        self.visible = visible
        self.asked: list[list[str]] = []

    def visible_ids(self, image_ids: Sequence[str]) -> set[str]:
        self.asked.append(list(image_ids))
        return self.visible & set(image_ids)


def test_kept_copies_are_listed_only_while_indexed_visible_in_one_batch(tmp_path) -> None:
    store = ImageStore(tmp_path / "images")
    for image_id, private, origin in [
        ("api-public", False, "api"),
        ("api-private", True, "api"),
        ("log-indexed", False, ORIGIN_LOG),
        ("log-not-indexed", False, ORIGIN_LOG),
        ("log-private", True, ORIGIN_LOG),
    ]:
        store.put(StoredImage(image_id, "shop", private, 1.0, origin=origin), b"bytes")
    index = IndexAnswering({"log-indexed", "log-private", "api-private"})
    access = ImageAccess(store, index, None, ImageLimits())  # type: ignore[arg-type]
    assert sorted(access.public_ids()) == ["api-public", "log-indexed"]
    # one question for every kept copy the store would show, none for the others
    assert [sorted(ids) for ids in index.asked] == [["log-indexed", "log-not-indexed"]]
    store.put(StoredImage("only-api", "shop", False, 1.0), b"bytes")
    for image_id in ("log-indexed", "log-not-indexed", "log-private"):
        store.delete(image_id)
    index.asked.clear()
    assert sorted(access.public_ids()) == ["api-public", "only-api"]
    assert index.asked == []  # no kept copy: the index is not asked at all
