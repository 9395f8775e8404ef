"""Filtered search: owner, tags (any / all) and an upload-time range, evaluated
inside the partition's scan, exact when selective, never short, never hidden.

The reference is :meth:`SearchFilter.matches` on each image's attributes and a
brute-force scan of the vectors; the partition must agree with it for exact
and IVF indexes, after tag updates, deletes, re-uploads, compaction and a
snapshot round trip.
"""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.faiss_index import SearchParams
from index.filters import FilterError, RowAttributes, SearchFilter
from index.partition import MatchingRows, Partition
from index.shard import IndexShard, partition_for
from streams.schemas import ImageEmbedded, ImageUpdated, SchemaError, decode, encode

DIM = 16
OWNERS = ["big", "mid", "small"]
TAGS = ["shoes", "red", "boots", "blue", "rare"]


def _unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _catalogue(rng, n):
    """Attributes per image: owners of very different sizes, Zipf-like tags."""
    owners = rng.choice(OWNERS, n, p=[0.8, 0.18, 0.02])
    weights = np.array([1 / (r + 1) for r in range(len(TAGS))])
    tags = [
        tuple(rng.choice(TAGS, rng.integers(0, 3), replace=False, p=weights / weights.sum()))
        for _ in range(n)
    ]
    times = 1000.0 + np.arange(n, dtype=float)
    return owners, tags, times


def _filled(n, factory="IVF{nlist},Flat", threshold=10**9, seed=0):
    rng = np.random.default_rng(seed)
    vectors = _unit(rng, n)
    owners, tags, times = _catalogue(rng, n)
    part = Partition(DIM, factory, ann_threshold=threshold, background=False)
    for i in range(n):
        part.upsert(f"img-{i}", vectors[i], times[i], owner_id=owners[i], tags=tags[i])
    return part, vectors, owners, tags, times


def _truth(where, vectors, owners, tags, times, query, k, hidden=()):
    keep = [
        i
        for i in range(len(vectors))
        if f"img-{i}" not in hidden and where.matches(owners[i], tags[i], times[i])
    ]
    keep.sort(key=lambda i: -float(vectors[i] @ query))
    return [f"img-{i}" for i in keep[:k]]


FILTERS = [
    SearchFilter.of(owner_ids=["small"]),
    SearchFilter.of(owner_ids=["mid", "small"]),
    SearchFilter.of(tags_any=["rare"]),
    SearchFilter.of(tags_any=["red", "blue"]),
    SearchFilter.of(tags_all=["shoes", "red"]),
    SearchFilter.of(owner_ids=["big"], tags_any=["boots"], uploaded_after=1100.0),
    SearchFilter.of(uploaded_after=1200.0, uploaded_before=1260.0),
    SearchFilter.of(tags_any=["no-such-tag"]),
]


# ------------------------------------------------------------------ the model


def test_filter_meaning_is_a_conjunction():
    where = SearchFilter.of(["shop"], tags_any=["a", "b"], tags_all=["c"], uploaded_before=10)
    assert where.matches("shop", ["a", "c"], 5)
    assert not where.matches("other", ["a", "c"], 5)  # owner
    assert not where.matches("shop", ["c"], 5)  # none of tags_any
    assert not where.matches("shop", ["a"], 5)  # not all of tags_all
    assert not where.matches("shop", ["a", "c"], 10)  # the upper bound is exclusive
    assert SearchFilter().empty and not where.empty
    # an empty filter is the search without one: SearchParams keeps one form of it
    assert SearchParams(where=SearchFilter()) == SearchParams()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"owner": ["x"]}, "unknown filter fields"),
        ({"tags_any": "shoes"}, "tags_any must be a list of strings"),
        ({"tags_all": [""]}, "tags_all contains an empty value"),
        ({"uploaded_after": "yesterday"}, "uploaded_after must be a number"),
        ({"uploaded_after": 5, "uploaded_before": 5}, "uploaded_after must be before"),
        ({"owner_ids": [str(i) for i in range(65)]}, "at most 64"),
        ({"uploaded_before": float("inf")}, "finite"),
    ],
)
def test_a_bad_filter_is_refused_with_what_is_wrong(fields, message):
    with pytest.raises(FilterError, match=message):
        SearchFilter.from_json(fields)


def test_the_wire_form_round_trips():
    for where in FILTERS:
        assert SearchFilter.from_json(json.loads(json.dumps(where.to_json()))) == where


def test_events_carry_tags_and_refuse_bad_ones():
    update = ImageUpdated(image_id="a", action="tags", updated_at=1.0, tags=["x", "y"])
    assert decode(ImageUpdated, encode(update)).tags == ["x", "y"]
    for bad, message in [
        ({"action": "tags"}, "tags is set exactly when action is 'tags'"),
        ({"action": "delete", "tags": ["x"]}, "tags is set exactly when action is 'tags'"),
        ({"action": "tags", "tags": ["a,b"]}, "without a comma"),
        ({"action": "tags", "tags": [str(i) for i in range(33)]}, "at most 32 tags"),
    ]:
        body = json.dumps({"image_id": "a", "updated_at": 1.0, **bad}).encode()
        with pytest.raises(SchemaError, match=message):
            decode(ImageUpdated, body)
    # An embedding written before tags existed still decodes (no tags).
    old = ImageEmbedded(
        image_id="a",
        model_version="m",
        dim=1,
        vector_b64="AACAPw==",
        uploaded_at=1.0,
        embedded_at=1.0,
        source_partition=0,
        source_offset=0,
    )
    body = json.loads(encode(old))
    body.pop("tags")
    assert decode(ImageEmbedded, json.dumps(body).encode()).tags is None


# ------------------------------------------------------------ the row index


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "retag", "compact"]),
            st.sampled_from(OWNERS),
            st.sets(st.sampled_from(TAGS), max_size=3),
            st.integers(1, 3),
        ),
        max_size=40,
    )
)
def test_row_index_agrees_with_the_filter_meaning(operations):
    attributes = RowAttributes()
    images: list[list] = []  # [first_row, count, owner, tags, time] per live image
    rows = 0
    for step, (op, owner, tags, count) in enumerate(operations):
        if op == "add" or not images:
            attributes.add(rows, count, owner, tags, float(step))
            images.append([rows, count, owner, tuple(tags), float(step)])
            rows += count
        elif op == "retag":
            image = images[step % len(images)]
            attributes.retag(image[0], image[1], image[3], tags)
            image[3] = tuple(tags)
        else:  # drop every other image's rows and renumber the rest
            kept_images = images[::2]
            kept = np.concatenate(
                [np.arange(i[0], i[0] + i[1]) for i in kept_images] or [np.empty(0, np.int64)]
            ).astype(np.int64)
            new_of_old = np.full(rows, -1, dtype=np.int64)
            new_of_old[kept] = np.arange(len(kept))
            attributes.renumber(new_of_old, kept)
            for image in kept_images:
                image[0] = int(new_of_old[image[0]])
            images, rows = kept_images, len(kept)
        for where in FILTERS:
            expected = sorted(
                row
                for i in images
                if where.matches(i[2], i[3], i[4])
                for row in range(i[0], i[0] + i[1])
            )
            assert attributes.matching_rows(where, rows).sorted_rows().tolist() == expected


# --------------------------------------------------------------- the search


@pytest.mark.parametrize("factory", ["Flat", "IVF{nlist},Flat", "HNSW16"])
def test_filtered_search_returns_the_filtered_truth(factory):
    part, vectors, owners, tags, times = _filled(1500, factory, threshold=1000)
    assert part.kind == ("exact" if factory == "Flat" else "ann")
    queries = _unit(np.random.default_rng(7), 20)
    # Uniform random vectors: the IVF's hardest case; a filter may cost a little recall
    # against the unfiltered search on the same index, never more.
    unfiltered = np.mean(
        [
            len({h.image_id for h in part.search(q, 10)[0]} & set(_brute(vectors, q, 10))) / 10
            for q in queries
        ]
    )
    for where in FILTERS:
        for exact_rows in (0, 10**6):  # the index walk with a bitmap; exact over the rows
            part.filter_exact_rows = exact_rows
            recalls = []
            for query in queries:
                hits = part.search(query, 10, SearchParams(where=where))[0]
                truth = _truth(where, vectors, owners, tags, times, query, 10)
                assert len(hits) == len(truth)  # k when k match, never short
                assert all(where.matches(*_attrs(h.image_id, owners, tags, times)) for h in hits)
                found = {h.image_id for h in hits}
                recalls.append(len(found & set(truth)) / len(truth) if truth else 1.0)
            exact = exact_rows or factory == "Flat"
            assert np.mean(recalls) >= (1.0 if exact else unfiltered - 0.05), (where, unfiltered)


def _brute(vectors, query, k):
    return [f"img-{i}" for i in np.argsort(-(vectors @ query))[:k]]


def _attrs(image_id, owners, tags, times):
    i = int(image_id.split("-")[1])
    return owners[i], tags[i], times[i]


def test_tag_updates_deletes_and_reuploads_change_what_a_filter_finds():
    part, vectors, *_ = _filled(300, "Flat")
    shoes = SearchFilter.of(tags_any=["fresh-tag"])
    query = vectors[5]
    assert part.search(query, 10, SearchParams(where=shoes))[0] == []
    part.update("img-5", "tags", 5000.0, ["fresh-tag"])
    assert [h.image_id for h in part.search(query, 10, SearchParams(where=shoes))[0]] == ["img-5"]
    # An older tags event loses to the newer one (last writer wins, any order).
    part.update("img-5", "tags", 4000.0, [])
    assert len(part.search(query, 10, SearchParams(where=shoes))[0]) == 1
    part.update("img-5", "private", 5001.0)
    assert part.search(query, 10, SearchParams(where=shoes))[0] == []
    part.update("img-5", "public", 5002.0)
    # A re-upload with its own tags, newer than the tags update, replaces them.
    part.upsert("img-5", vectors[5], 6000.0, owner_id="small", tags=["other"])
    assert part.search(query, 10, SearchParams(where=shoes))[0] == []
    mine = SearchFilter.of(owner_ids=["small"], tags_all=["other"])
    assert [h.image_id for h in part.search(query, 3, SearchParams(where=mine))[0]] == ["img-5"]
    part.update("img-5", "delete", 7000.0)
    assert part.search(query, 3, SearchParams(where=mine))[0] == []


def test_a_tags_update_before_the_embedding_is_obeyed_when_it_arrives():
    part = Partition(DIM, "Flat", background=False)
    vector = _unit(np.random.default_rng(3), 1)[0]
    part.update("late", "tags", 20.0, ["kept"])
    part.upsert("late", vector, 10.0, owner_id="o", tags=["upload-tag"])
    found = part.search(vector, 5, SearchParams(where=SearchFilter.of(tags_any=["kept"])))[0]
    assert [h.image_id for h in found] == ["late"]


# ------------------------------------------------------------ the property


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["upload", "tags", "delete", "private", "public", "compact"]),
            st.integers(0, 29),
            st.sampled_from(OWNERS),
            st.sets(st.sampled_from(TAGS), max_size=2),
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from(FILTERS[:-1]),
)
def test_a_filtered_search_never_returns_a_mismatch_or_a_hidden_image(operations, where):
    """Random tag updates, deletes, privacy changes, re-uploads and compactions: every
    filtered search returns exactly the visible images that match at that moment
    (k = all of them), and a snapshot round trip answers the same."""
    rng = np.random.default_rng(len(operations))
    vectors = _unit(rng, 30)
    part = Partition(DIM, "Flat", min_compact_rows=1, compact_ratio=0.0, background=False)
    truth: dict[str, dict] = {}  # image -> owner, tags, time, visible
    for clock, (op, number, owner, tags) in enumerate(operations, start=1):
        image_id, at = f"img-{number}", float(clock)
        if op == "upload":
            part.upsert(image_id, vectors[number], at, owner_id=owner, tags=tags)
            truth[image_id] = {"owner": owner, "tags": tuple(tags), "at": at, "visible": True}
        elif op == "compact":
            part.rebuild()
        else:
            part.update(image_id, op, at, tags if op == "tags" else ())
            if image_id in truth:
                if op == "tags":
                    truth[image_id]["tags"] = tuple(tags)
                elif op == "delete":
                    del truth[image_id]
                else:
                    truth[image_id]["visible"] = op == "public"
        expected = {
            i
            for i, t in truth.items()
            if t["visible"] and where.matches(t["owner"], t["tags"], t["at"])
        }
        found = part.search(vectors[0], 30, SearchParams(where=where))[0]
        assert {h.image_id for h in found} == expected
    restored = Partition(DIM, "Flat", background=False)
    restored.import_state(*part.export_state())
    found = restored.search(vectors[0], 30, SearchParams(where=where))[0]
    assert {h.image_id for h in found} == expected


def test_a_shard_searches_every_partition_with_the_filter():
    rng = np.random.default_rng(4)
    vectors = _unit(rng, 400)
    shard = IndexShard(
        DIM, "m", range(4), lambda: Partition(DIM, "IVF{nlist},Flat", 200, background=False)
    )
    for i, vector in enumerate(vectors):
        image_id = f"img-{i}"
        owner = "even" if i % 2 == 0 else "odd"
        shard.apply_vectors(partition_for(image_id, 4), i, image_id, vector, 1.0 + i, False, owner)
    shard.wait_idle()
    where = SearchFilter.of(owner_ids=["odd"])
    hits = shard.search(vectors[3], 10, SearchParams(where=where))
    assert len(hits) == 10 and all(int(h.image_id.split("-")[1]) % 2 for h in hits)
    assert hits[0].image_id == "img-3"


def test_a_shard_scores_rows_read_back_as_each_partition_would():
    """Images of several rows (global vector + tiles), a selective filter: the shard's
    one-pass scoring of rows read back gives each image once, at its best row's score,
    the same hits its partitions' own filtered searches give."""
    rng = np.random.default_rng(5)
    shard = IndexShard(DIM, "m", range(4), lambda: Partition(DIM, "Flat", background=False))
    for i in range(400):
        image_id = f"img-{i}"
        rows = _unit(rng, 3)  # global + 2 tiles
        owner = "few" if i % 80 == 0 else "many"
        shard.apply_vectors(partition_for(image_id, 4), i, image_id, rows, 1.0, False, owner)
    few = SearchFilter.of(owner_ids=["few"])
    where = SearchParams(where=few)
    query = _unit(rng, 1)[0]
    assert all(
        isinstance(part.top_or_rows(query[None], 4, where), MatchingRows)
        for part in shard.partitions.values()
    )
    hits = shard.search(query, 4, where)
    per_partition = sorted(
        (h for part in shard.partitions.values() for h in part.search(query, 4, where)[0]),
        key=lambda h: -h.score,
    )[:4]
    assert [(h.image_id, round(h.score, 5)) for h in hits] == [
        (h.image_id, round(h.score, 5)) for h in per_partition
    ]
    assert len({h.image_id for h in hits}) == 4  # of the 5 images that match


def test_time_ranges_through_the_zone_map_match_a_scan():
    """80 blocks of rows in roughly upload order, some out of order: every range, before
    and after a renumbering, finds exactly the rows a scan of the column finds."""
    rng = np.random.default_rng(9)
    count = 80 * 256
    times = np.arange(count, dtype=float) + rng.normal(0, 50, count)  # late and early rows
    attributes = RowAttributes()
    for row, at in enumerate(times.tolist()):
        attributes.add(row, 1, "o", (), at)
    kept = np.sort(rng.choice(count, count // 2, replace=False))
    for renumbered in (False, True):
        for _ in range(50):
            low = float(rng.uniform(-100, count))
            where = SearchFilter.of(uploaded_after=low, uploaded_before=low + rng.uniform(1, 900))
            rows = len(times)
            expected = np.flatnonzero(
                (times >= where.uploaded_after) & (times < where.uploaded_before)
            )
            found = attributes.matching_rows(where, rows)
            assert found.sorted_rows().tolist() == expected.tolist()
        if not renumbered:
            new_of_old = np.full(count, -1, dtype=np.int64)
            new_of_old[kept] = np.arange(len(kept))
            attributes.renumber(new_of_old, kept)
            times = times[kept]
