"""The compact hits answer of a shard: round trip, and broken bytes refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from index.hits_wire import HitsWireError, decode_hits, encode_hits
from index.partition import Hit


def test_hits_with_and_without_vectors_round_trip() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 8)).astype(np.float32)
    hits = [Hit(f"img-{n}-ü", 0.9 - n / 10, vectors[n]) for n in range(3)]
    back = decode_hits(encode_hits(hits), 8)
    assert [(h.image_id, h.score) for h in back] == [
        (h.image_id, pytest.approx(h.score)) for h in hits
    ]
    assert np.array_equal(np.stack([h.vector for h in back]), vectors)  # type: ignore[misc]
    plain = decode_hits(encode_hits([Hit("a", 0.5), Hit("b", 0.25)]), 8)
    assert [(h.image_id, h.score, h.vector) for h in plain] == [("a", 0.5, None), ("b", 0.25, None)]
    assert decode_hits(encode_hits([]), 8) == []


def test_uris_round_trip_and_answers_without_them_are_still_read() -> None:
    hits = [Hit("a", 0.5, uri="https://example.com/ä.jpg"), Hit("b", 0.25), Hit("c", 0.1, uri="x")]
    back = decode_hits(encode_hits(hits), 8)
    assert [(h.image_id, h.uri) for h in back] == [
        ("a", "https://example.com/ä.jpg"),
        ("b", ""),
        ("c", "x"),
    ]
    # A shard from before URIs answers VSH1: no URI lengths, no URIs.
    old = struct.pack("<4sII", b"VSH1", 2, 0)
    old += np.asarray([0.5, 0.25], "<f4").tobytes() + np.asarray([1, 2], "<u2").tobytes() + b"abc"
    assert [(h.image_id, h.score, h.uri) for h in decode_hits(old, 8)] == [
        ("a", 0.5, ""),
        ("bc", 0.25, ""),
    ]


def test_broken_answers_are_refused() -> None:
    data = encode_hits([Hit("a", 0.5, np.ones(4, np.float32))])
    with pytest.raises(HitsWireError, match="header"):
        decode_hits(data[:5], 4)
    with pytest.raises(HitsWireError, match="dimension"):
        decode_hits(data, 8)
    with pytest.raises(HitsWireError, match="bytes"):
        decode_hits(data[:-1], 4)
    with pytest.raises(HitsWireError, match="dimension"):
        decode_hits(b"XXXX" + data[4:], 4)
    bad = encode_hits([Hit("a", 0.5, np.array([1, 2, np.nan, 4], np.float32))])
    with pytest.raises(HitsWireError, match="finite"):
        decode_hits(bad, 4)
    broken_id = encode_hits([Hit("ab", 0.5)]).replace(b"ab", b"\xff\xfe")
    with pytest.raises(HitsWireError, match="UTF-8"):
        decode_hits(broken_id, 4)
    broken_uri = encode_hits([Hit("a", 0.5, uri="cd")]).replace(b"cd", b"\xff\xfe")
    with pytest.raises(HitsWireError, match="URI that is not UTF-8"):
        decode_hits(broken_uri, 4)
