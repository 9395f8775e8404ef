"""The API's cache of rendered previews of images that live at a URI."""

from __future__ import annotations

from visearch.catalog.thumbnails import PreviewCache


def test_least_recently_used_previews_go_first_within_the_byte_budget() -> None:
    cache = PreviewCache(max_bytes=10)
    cache.put(("a", 1.0, 160), b"aaaa")
    cache.put(("b", 1.0, 160), b"bbbb")
    assert cache.get(("a", 1.0, 160)) == b"aaaa"  # a is now the most recent
    cache.put(("c", 1.0, 160), b"cccc")  # 12 bytes: b, the least recent, goes
    assert cache.get(("b", 1.0, 160)) is None
    assert cache.get(("a", 1.0, 160)) == b"aaaa" and cache.get(("c", 1.0, 160)) == b"cccc"
    cache.put(("a", 1.0, 160), b"aa")  # replacing counts the new size only
    cache.put(("d", 1.0, 160), b"dddd")
    assert len(cache) == 3


def test_a_re_upload_or_another_size_is_another_entry_and_huge_ones_are_not_kept() -> None:
    cache = PreviewCache(max_bytes=10)
    cache.put(("a", 1.0, 160), b"old")
    assert cache.get(("a", 2.0, 160)) is None and cache.get(("a", 1.0, 320)) is None
    cache.put(("big", 1.0, 160), b"x" * 11)
    assert cache.get(("big", 1.0, 160)) is None and cache.get(("a", 1.0, 160)) == b"old"
