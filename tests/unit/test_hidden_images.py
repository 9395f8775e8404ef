"""The image store's denylist: what it hides, what it never hides, and replicas sharing it."""

import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visearch.catalog.hidden import REFRESH_INTERVAL_S, HiddenImages
from visearch.catalog.store import ImageStore, StoredImage, UnknownImageError


def _put(store, image_id, private=False):
    store.put(StoredImage(image_id, "owner", private, time.time()), b"bytes")


def test_unknown_ids_stay_visible(tmp_path):
    """Denylist, not allowlist: images published by backends never touch the store."""
    store = ImageStore(tmp_path)
    assert store.visible("published-by-a-backend")
    _put(store, "a")
    assert store.visible("a")
    assert not (tmp_path / ".hidden.log").exists()  # nothing hidden, nothing written


def test_each_action_hides_and_the_reverse_shows(tmp_path):
    store = ImageStore(tmp_path)
    _put(store, "a")
    store.set_private("a", True)
    assert not store.visible("a")
    store.set_private("a", False)
    assert store.visible("a")
    store.set_flagged("a", True)
    assert not store.visible("a")
    store.set_flagged("a", False)
    assert store.visible("a")
    _put(store, "b", private=True)
    assert not store.visible("b")
    _put(store, "b", private=False)  # a public re-upload makes it public
    assert store.visible("b")


def test_delete_leaves_a_tombstone_that_a_reupload_clears(tmp_path):
    store = ImageStore(tmp_path)
    _put(store, "a")
    store.delete("a")
    assert "a" not in store
    assert not store.visible("a")
    assert not ImageStore(tmp_path).visible("a")  # durable: a restarted API still hides it
    _put(store, "a")
    assert store.visible("a")


def test_a_flag_outlives_delete_and_reupload(tmp_path):
    """As in the index (flags are registers of their own): re-uploading is no way around it."""
    store = ImageStore(tmp_path)
    _put(store, "a")
    store.set_flagged("a", True)
    store.delete("a")
    _put(store, "a")
    assert not store.visible("a")
    store.set_flagged("a", False)
    assert store.visible("a")


def test_updates_of_unknown_images_are_refused(tmp_path):
    store = ImageStore(tmp_path)
    for update in (
        lambda: store.set_flagged("nope", True),
        lambda: store.set_private("nope", True),
        lambda: store.delete("nope"),
    ):
        with pytest.raises(UnknownImageError):
            update()
    assert store.visible("nope")


def test_another_replica_sees_a_change_as_soon_as_it_returns(tmp_path):
    """Two stores on one directory, as API replicas on a shared volume."""
    writer, reader = ImageStore(tmp_path), ImageStore(tmp_path)
    _put(writer, "a")
    assert reader.visible("a")  # the reader has checked (and refreshed) just now
    writer.set_private("a", True)
    assert not reader.visible("a")
    writer.set_private("a", False)
    assert reader.visible("a")


def test_a_change_by_another_process_is_seen_after_it_returns(tmp_path):
    store = ImageStore(tmp_path)
    _put(store, "a")
    assert store.visible("a")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from visearch.catalog.store import ImageStore
        ImageStore(Path({str(tmp_path)!r})).delete("a")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert not store.visible("a")


def test_a_partly_written_line_waits_for_its_end(tmp_path):
    hidden = HiddenImages(tmp_path)
    with (tmp_path / ".hidden.log").open("ab") as journal:
        journal.write(b"a 2\nb ")
    time.sleep(REFRESH_INTERVAL_S)
    assert not hidden.visible("a")
    assert hidden.visible("b")
    with (tmp_path / ".hidden.log").open("ab") as journal:
        journal.write(b"4\n")
    time.sleep(REFRESH_INTERVAL_S)
    assert not hidden.visible("b")


def test_opening_compacts_and_open_readers_follow(tmp_path):
    old_reader = HiddenImages(tmp_path)
    # 3,000 changes that leave 100 ids hidden, as a long-running deployment leaves them.
    lines = [f"i{n} {bits}\n" for n in range(1000) for bits in (2, 0, 2 if n % 10 == 0 else 0)]
    (tmp_path / ".hidden.log").write_text("".join(lines))
    reopened = ImageStore(tmp_path)
    assert old_reader.path.read_text().count("\n") == 100
    _put(reopened, "i1", private=True)
    time.sleep(REFRESH_INTERVAL_S)
    for n in range(1000):
        expected = n % 10 != 0 and n != 1
        assert reopened.visible(f"i{n}") is expected
        assert old_reader.visible(f"i{n}") is expected, n


def test_a_large_denylist_is_loaded_and_answers_every_check(tmp_path):
    """100,000 hidden ids; what a check costs is measured by ``bench.privacy``."""
    (tmp_path / ".hidden.log").write_text("".join(f"i{n} 2\n" for n in range(0, 200_000, 2)))
    hidden = HiddenImages(tmp_path)
    assert len(hidden) == 100_000
    ids = [f"i{n}" for n in range(100)]
    assert sum(hidden.visible(image_id) for image_id in ids) == 50
    assert not hidden.visible("i199998") and hidden.visible("i199999")


ACTIONS = st.sampled_from(
    ["upload", "upload_private", "private", "public", "flag", "unflag", "delete"]
)
REASON = {"private": "private", "public": "private", "flag": "flagged", "unflag": "flagged"}


def _update(store, image_id, action):
    if action == "delete":
        store.delete(image_id)
    elif action in ("private", "public"):
        store.set_private(image_id, action == "private")
    else:
        store.set_flagged(image_id, action == "flag")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3), ACTIONS), max_size=40))
def test_replicas_agree_with_a_model(tmp_path_factory, operations):
    """Random updates through two replicas; both hide exactly what the model hides."""
    root = tmp_path_factory.mktemp("store")
    replicas = [ImageStore(root), ImageStore(root)]
    model: dict[str, set[str]] = {}  # id -> why it is hidden
    for replica, number, action in operations:
        store, image_id = replicas[replica], f"img{number}"
        reasons = model.setdefault(image_id, set())
        if action.startswith("upload"):
            _put(store, image_id, private=action == "upload_private")
            reasons -= {"deleted", "private"}
            if action == "upload_private":
                reasons.add("private")
        elif image_id not in store:
            with pytest.raises(UnknownImageError):
                _update(store, image_id, action)
            continue
        else:
            _update(store, image_id, action)
            if action == "delete":
                reasons.add("deleted")
            elif action in ("private", "flag"):
                reasons.add(REASON[action])
            else:
                reasons.discard(REASON[action])
        for other in replicas:
            for known, why in model.items():
                assert other.visible(known) is (not why), (known, why)
