"""The worker's copy of inline Kafka uploads, and the log's updates applied to it."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest

from streams.schemas import ImageUpdated, ImageUploaded
from visearch.catalog.kept_uploads import InlineUploadKeeper
from visearch.catalog.store import (
    LOG_DELETE_HORIZON_S,
    ORIGIN_API,
    ORIGIN_LOG,
    ImageStore,
    StoredImage,
)

BYTES = b"\x89PNG not really, the keeper does not decode"


def upload(image_id: str = "a", at: float = 10.0, **fields: object) -> ImageUploaded:
    event = ImageUploaded(
        image_id=image_id,
        owner_id="shop",
        uploaded_at=at,
        image_b64=base64.b64encode(BYTES).decode(),
        **fields,
    )
    return event


def update(action: str, at: float, image_id: str = "a", **fields: object) -> ImageUpdated:
    return ImageUpdated(image_id=image_id, action=action, updated_at=at, **fields)


@pytest.fixture
def keeper(tmp_path) -> InlineUploadKeeper:
    return InlineUploadKeeper(ImageStore(tmp_path / "images"))


def test_an_inline_upload_is_kept_with_its_fields_and_origin(keeper):
    assert keeper.keep(upload(tags=["red"], private=True))
    stored = keeper.store.metadata("a")
    assert keeper.store.get("a") == BYTES
    assert (stored.owner_id, stored.private, stored.uploaded_at, stored.tags) == (
        "shop",
        True,
        10.0,
        ("red",),
    )
    assert stored.origin == ORIGIN_LOG


def test_uri_uploads_and_older_uploads_are_not_kept(keeper):
    uri_upload = ImageUploaded(image_id="u", owner_id="o", uploaded_at=1.0, uri="https://e/x")
    assert not keeper.keep(uri_upload) and "u" not in keeper.store
    assert keeper.keep(upload(at=10.0))
    assert not keeper.keep(upload(at=9.0))  # a replayed older upload
    assert not keeper.keep(upload(at=10.0))  # the same one again
    assert keeper.keep(upload(at=11.0)) and keeper.store.metadata("a").uploaded_at == 11.0


def test_a_delete_removes_the_copy_unless_a_newer_upload_won(keeper):
    keeper.keep(upload(at=10.0))
    assert not keeper.update(update("delete", 9.0))
    assert "a" in keeper.store
    assert keeper.update(update("delete", 12.0))
    assert "a" not in keeper.store and not keeper.store.visible("a")
    assert not keeper.keep(upload(at=11.0))  # the delete is newer: nothing comes back
    assert keeper.keep(upload(at=13.0)) and keeper.store.visible("a")


def test_a_delete_that_overtook_its_upload_still_wins(keeper):
    assert not keeper.update(update("delete", 12.0))  # nothing kept yet
    assert not keeper.keep(upload(at=10.0))
    assert "a" not in keeper.store


def test_delete_notes_are_swept_after_the_horizon(keeper):
    store = keeper.store
    for n in range(3):
        keeper.update(update("delete", 5.0, image_id=f"x{n}"))
    assert not keeper.keep(upload(image_id="x1", at=4.0))
    assert store.sweep_log_deletes(now=time.time() + LOG_DELETE_HORIZON_S - 60) == 0
    assert store.sweep_log_deletes(now=time.time() + LOG_DELETE_HORIZON_S + 60) == 3
    assert keeper.keep(upload(image_id="x1", at=4.0))  # forgotten


def test_a_delete_note_keeps_the_newest_time(keeper):
    keeper.update(update("delete", 12.0))
    keeper.update(update("delete", 8.0))  # an older delete read later
    assert keeper.store.log_deleted_at("a") == 12.0
    assert not keeper.keep(upload(at=11.0))


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_registers_are_last_writer_wins_in_any_order(keeper, order):
    keeper.keep(upload(at=10.0))
    private, public = update("private", 20.0), update("public", 15.0)
    flag, unflag = update("flag", 21.0), update("unflag", 16.0)
    tags_new, tags_old = update("tags", 22.0, tags=["new"]), update("tags", 17.0, tags=["old"])
    for pair in ((private, public), (flag, unflag), (tags_new, tags_old)):
        for index in order:
            keeper.update(pair[index])
    stored = keeper.store.metadata("a")
    assert stored.private and stored.tags == ("new",)
    assert not keeper.store.visible("a")  # private and flagged in the denylist
    assert (stored.private_at, stored.flagged_at, stored.tags_at) == (20.0, 21.0, 22.0)
    keeper.update(update("unflag", 30.0))
    keeper.update(update("public", 31.0))
    assert keeper.store.visible("a") and not keeper.store.metadata("a").private


def test_images_from_the_api_are_left_to_the_api(keeper):
    keeper.store.put(StoredImage("api-1", "o", False, 10.0, origin=ORIGIN_API), BYTES)
    assert not keeper.update(update("private", 20.0, image_id="api-1"))
    assert not keeper.update(update("delete", 20.0, image_id="api-1"))
    assert not keeper.store.metadata("api-1").private and "api-1" in keeper.store


class SlowStore(ImageStore):
    """A real store whose reads take 5 ms and writes 10 ms more: wide enough for two
    threads to interleave between a check and a write."""

    def metadata(self, image_id: str) -> StoredImage:
        time.sleep(0.005)
        return super().metadata(image_id)

    def put(self, image: StoredImage, data: bytes) -> Path:
        time.sleep(0.01)
        return super().put(image, data)


def test_a_delete_racing_its_upload_in_another_thread_always_wins(tmp_path):
    """The worker's pool runs keeps and updates side by side. The delete is sent while
    the upload is between its checks and its write (its store reads take 5 ms): it
    must still leave no copy."""
    keeper = InlineUploadKeeper(SlowStore(tmp_path / "images"))
    for n in range(10):
        image_id = f"race-{n}"
        keeping = threading.Thread(target=keeper.keep, args=(upload(image_id, at=10.0),))
        keeping.start()
        time.sleep(0.002)  # the upload has checked the recent deletes, and reads the store
        keeper.update(update("delete", 12.0, image_id))
        keeping.join()
        assert image_id not in keeper.store, n


class GatedStore(ImageStore):
    """A real store whose ``put`` waits at a gate: the keep has passed its checks and
    not yet written, which is where another worker's delete can slip in."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.entered, self.gate = threading.Event(), threading.Event()

    def put(self, image: StoredImage, data: bytes) -> Path:
        self.entered.set()
        assert self.gate.wait(10)
        return super().put(image, data)


def test_a_delete_read_by_another_worker_mid_keep_leaves_no_copy(tmp_path):
    """Two workers share the image store and nothing else: one reads the upload, the
    other its delete (another topic). The delete finds no copy yet, because the keep
    is between its checks and its write: the keep must see the delete afterwards."""
    root = tmp_path / "images"
    uploads_worker = InlineUploadKeeper(GatedStore(root))
    updates_worker = InlineUploadKeeper(ImageStore(root))
    kept: list[bool] = []
    keeping = threading.Thread(target=lambda: kept.append(uploads_worker.keep(upload(at=10.0))))
    keeping.start()
    assert uploads_worker.store.entered.wait(10)
    assert not updates_worker.update(update("delete", 12.0))  # nothing to remove yet
    uploads_worker.store.gate.set()
    keeping.join(10)
    assert kept == [False]
    assert "a" not in updates_worker.store and "a" not in uploads_worker.store
    assert not ImageStore(root).path_of("a").exists()  # the bytes are gone too


@pytest.mark.parametrize("delete_first", [True, False])
def test_two_workers_agree_whichever_reads_first(tmp_path, delete_first):
    root = tmp_path / "images"
    uploads_worker = InlineUploadKeeper(ImageStore(root))
    updates_worker = InlineUploadKeeper(ImageStore(root))
    if delete_first:
        updates_worker.update(update("delete", 12.0))
        assert not uploads_worker.keep(upload(at=10.0))
    else:
        assert uploads_worker.keep(upload(at=10.0))
        assert updates_worker.update(update("delete", 12.0))
    assert "a" not in ImageStore(root)
    assert uploads_worker.keep(upload(at=13.0))  # a newer upload is kept by either
    assert not updates_worker.update(update("delete", 12.5))
    assert ImageStore(root).metadata("a").uploaded_at == 13.0
