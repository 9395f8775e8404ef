"""Last-writer-wins visibility registers: the outcome depends on events, not arrival order."""

import itertools
import json
import math
import random

import numpy as np
import pytest

from index.partition import Partition
from index.visibility import NEVER, ImageState

# An event is (time, kind, argument): ("upload", private) or ("update", action).
ACTIONS = ("delete", "private", "public", "flag", "unflag")


def _apply(state, event):
    """What a partition does with one event, on a bare ImageState (one row per upload)."""
    at, kind, arg = event
    if kind == "upload":
        if not state.accepts_upload(at):
            return False
        state.first_row, state.row_count = 0, 1
        state.record_upload(at, arg)
        return True
    state.apply(arg, at)
    if state.deleted:
        state.first_row, state.row_count = -1, 0
    return True


def _final(events):
    state = ImageState()
    for event in events:
        _apply(state, event)
    return state


def _outcome(state):
    # Deleted images may keep any private flag; only what a search can see must agree.
    return (state.visible, state.deleted, state.flagged, state.private if state.visible else None)


def _event_sets():
    """Fixed sets plus seeded random ones, every time distinct within a set."""
    sets = [
        [
            (1.0, "upload", False),
            (2.0, "update", "private"),
            (3.0, "update", "public"),
            (4.0, "update", "flag"),
            (5.0, "update", "unflag"),
            (6.0, "update", "delete"),
        ],
        [
            (1.0, "upload", True),
            (2.0, "update", "delete"),
            (3.0, "upload", False),
            (4.0, "update", "flag"),
            (5.0, "update", "public"),
            (6.0, "update", "unflag"),
        ],
    ]
    rng = random.Random(7)
    for _ in range(14):
        kinds = [("upload", rng.random() < 0.5) for _ in range(rng.randint(1, 2))]
        kinds += [("update", rng.choice(ACTIONS)) for _ in range(6 - len(kinds))]
        times = rng.sample(range(1, 100), len(kinds))
        sets.append([(float(t), kind, arg) for t, (kind, arg) in zip(times, kinds, strict=True)])
    return sets


@pytest.mark.parametrize("events", _event_sets())
def test_every_arrival_order_gives_the_time_order_outcome(events):
    expected = _outcome(_final(sorted(events)))
    seen = {_outcome(_final(order)) for order in itertools.permutations(events)}
    assert seen == {expected}


def test_time_order_outcomes_are_the_intended_ones():
    # Guards the oracle itself: the permutation test compares against these.
    upload, delete = (1.0, "upload", False), (2.0, "update", "delete")
    assert _final([upload]).visible
    assert not _final([upload, delete]).visible
    assert not _final([upload, (2.0, "update", "private")]).visible
    assert _final([upload, (2.0, "update", "private"), (3.0, "update", "public")]).visible
    assert not _final([upload, (2.0, "update", "flag")]).visible
    assert _final([upload, (2.0, "update", "flag"), (3.0, "update", "unflag")]).visible
    assert _final([upload, delete, (3.0, "upload", False)]).visible
    assert not _final([(1.0, "upload", True)]).visible


def test_equal_time_replay_of_an_upload_is_refused():
    state = ImageState()
    assert state.accepts_upload(5.0)
    state.record_upload(5.0, private=False)
    assert not state.accepts_upload(5.0)
    assert not state.accepts_upload(4.0)
    assert state.accepts_upload(5.5)


def test_upload_older_than_a_delete_is_refused():
    state = ImageState()
    state.delete(10.0)
    assert not state.accepts_upload(9.0)
    assert not state.accepts_upload(10.0)
    assert state.accepts_upload(11.0)


def test_delete_at_the_upload_time_deletes():
    state = ImageState(first_row=0, row_count=1)
    state.record_upload(3.0, private=False)
    assert state.visible
    state.delete(3.0)
    assert state.deleted
    assert not state.visible


def test_delete_keeps_the_newest_time():
    state = ImageState()
    state.delete(5.0)
    state.delete(2.0)
    assert state.deleted_at == 5.0


def test_older_register_writes_lose():
    state = ImageState(first_row=0, row_count=1)
    state.record_upload(1.0, private=False)
    state.apply("private", 5.0)
    state.apply("public", 4.0)
    assert state.private and state.private_at == 5.0
    state.apply("flag", 3.0)
    state.apply("unflag", 2.0)
    assert state.flagged and state.flagged_at == 3.0
    assert not state.visible


def test_upload_private_flag_is_a_register_write_at_upload_time():
    state = ImageState(first_row=0, row_count=1)
    state.apply("public", 5.0)
    state.record_upload(3.0, private=True)  # older than the public event
    assert not state.private
    state.record_upload(6.0, private=True)
    assert state.private


def test_fresh_state_is_invisible_and_has_no_rows():
    state = ImageState()
    assert not state.visible
    assert list(state.rows) == []
    assert state.uploaded_at == NEVER


def test_rows_range():
    assert list(ImageState(first_row=7, row_count=3).rows) == [7, 8, 9]


def test_unknown_action_raises():
    with pytest.raises(ValueError, match="unknown visibility action"):
        ImageState().apply("undelete", 1.0)


@pytest.mark.parametrize(
    "state",
    [
        ImageState(),
        ImageState(4, 3, 12.5, True, 13.0, True, 14.0, 11.0),
        ImageState(0, 1, 1.0, False, NEVER, False, NEVER, NEVER),
        ImageState(
            2, 1, 3.0, False, NEVER, False, NEVER, NEVER, "shop", ("a",), 3.0, "https://e/x"
        ),
    ],
)
def test_to_list_from_list_round_trip(state):
    values = state.to_list()
    assert ImageState.from_list(values) == state
    # Snapshots store the list as JSON (infinities included).
    again = ImageState.from_list(json.loads(json.dumps(values)))
    assert again == state
    assert math.isinf(ImageState().to_list()[2])


def test_snapshots_from_before_filters_and_uris_still_load():
    state = ImageState(
        2, 1, 3.0, False, NEVER, False, NEVER, NEVER, "shop", ("a",), 3.0, "https://e/x"
    )
    before_uris = ImageState.from_list(state.to_list()[:11])
    assert before_uris.uri == "" and before_uris.tags == ("a",)
    before_filters = ImageState.from_list(state.to_list()[:8])
    assert (before_filters.owner_id, before_filters.tags, before_filters.uri) == ("", (), "")


# ------------------------------------------------- the same property, through a Partition


def _partition_outcome(events, vectors):
    part = Partition(4, "Flat", background=False)
    for at, kind, arg in events:
        if kind == "upload":
            part.upsert("img", vectors[at], at, private=arg)
        else:
            part.update("img", arg, at)
    [hits] = part.search(np.ones(4, dtype=np.float32), 3)
    vector = part.vector_of("img")
    return (
        part.is_visible("img"),
        len(part),
        [hit.image_id for hit in hits],
        None if vector is None else tuple(np.round(vector, 5)),
    )


def test_partition_outcome_is_independent_of_arrival_order():
    events = [
        (1.0, "upload", False),
        (2.0, "update", "flag"),
        (3.0, "update", "delete"),
        (4.0, "upload", True),
        (5.0, "update", "public"),
        (6.0, "update", "unflag"),
    ]
    rng = np.random.default_rng(3)
    vectors = {e[0]: rng.random(4).astype(np.float32) + 0.1 for e in events if e[1] == "upload"}
    expected = _partition_outcome(events, vectors)
    assert expected[0] is True  # the newest upload, made public and unflagged
    assert expected[3] == tuple(np.round(vectors[4.0], 5))
    for order in itertools.permutations(events):
        assert _partition_outcome(order, vectors) == expected, order
