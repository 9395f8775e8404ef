"""The compact search request of the scatter: round trip, and broken bytes refused
with the JSON route's codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index.faiss_index import SearchParams
from index.filters import SearchFilter
from index.query_wire import HEADER, QueryWireError, decode_query, encode_query


def test_a_request_with_and_without_a_filter_round_trips() -> None:
    query = np.arange(8, dtype=np.float32) / 8
    where = SearchFilter.of(["shop-1"], tags_any=["shoes"], uploaded_after=10.0)
    back = decode_query(encode_query(query, 16, SearchParams(32, 8, where), True), 8)
    assert np.array_equal(back.query, query) and back.query.dtype == np.float32
    assert (back.k, back.params.ef_search, back.params.nprobe) == (16, 32, 8)
    assert back.with_vectors is True
    assert back.params.where == where
    plain = decode_query(encode_query(query, 3, SearchParams(), False), 8)
    assert plain.params.where is None and plain.with_vectors is False and plain.k == 3


def _codes_of(data: bytes, dim: int = 4) -> tuple[str, str]:
    with pytest.raises(QueryWireError) as caught:
        decode_query(data, dim)
    return caught.value.code, caught.value.message


def test_broken_requests_are_refused_with_a_code() -> None:
    good = encode_query(np.ones(4, np.float32), 10, SearchParams(), False)
    assert _codes_of(good[:5])[0] == "invalid_value"
    assert "starts with" in _codes_of(b"XXXX" + good[4:])[1]
    assert "expected 16" in _codes_of(good[:-1])[1]
    assert "expected 32" in _codes_of(good, 8)[1]
    assert "k must be" in _codes_of(encode_query(np.ones(4), 0, SearchParams(), False))[1]
    assert "nprobe" in _codes_of(encode_query(np.ones(4), 5, SearchParams(nprobe=70_000), False))[1]
    nan = encode_query(np.array([1, np.nan, 0, 0], np.float32), 10, SearchParams(), False)
    assert "NaN" in _codes_of(nan)[1]


def test_bad_filters_are_bad_filter() -> None:
    vector = np.ones(4, np.float32).tobytes()

    def with_filter(raw: bytes) -> bytes:
        return HEADER.pack(b"VSQ1", 10, 64, 16, 0, len(raw)) + raw + vector

    assert _codes_of(with_filter(b"{not json"))[0] == "bad_filter"
    assert _codes_of(with_filter(b"[1, 2]"))[0] == "bad_filter"
    assert _codes_of(with_filter(json.dumps({"tags_any": "shoes"}).encode()))[0] == "bad_filter"
    assert _codes_of(HEADER.pack(b"VSQ1", 10, 64, 16, 0, 1 << 20) + vector)[0] == "bad_filter"
    ok = decode_query(with_filter(json.dumps({"tags_any": ["shoes"]}).encode()), 4)
    assert ok.params.where == SearchFilter.of(tags_any=["shoes"])
