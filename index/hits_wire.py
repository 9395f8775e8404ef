"""A shard's hits as compact bytes: what a shard answers a scatter with.

A k = 10 search fetches 16 hits per shard with their vectors (the merge's
near-duplicate collapse compares them). As JSON with base64 vectors that is
~110 KB per 1280-d shard answer, encoded by the shard and parsed by the API
in Python: with 8 shards on 2 cores the parsing alone held the GIL for most
of a query (``bench.scatter``). As raw little-endian arrays it is 82 KB and
both ends are a ``tobytes`` / ``frombuffer``.

Layout (little-endian): magic ``VSH2``; uint32 count; uint32 dim (0: no
vectors); float32 scores[count]; uint16 id_lengths[count]; uint16
uri_lengths[count]; the UTF-8 ids, concatenated; the UTF-8 URIs,
concatenated; float32 vectors[count * dim]. ``VSH1`` (shards before URIs)
is the same without the URI lengths and URIs, and is still read.
"""

from __future__ import annotations

import struct

import numpy as np

from index.partition import Hit
from streams.errors import VisearchError

MEDIA_TYPE = "application/x-visearch-hits"
MAGIC = b"VSH2"
MAGIC_WITHOUT_URIS = b"VSH1"
HEADER = struct.Struct("<4sII")


class HitsWireError(VisearchError, ValueError):
    """Bytes that are not a well-formed hits answer."""


def encode_hits(hits: list[Hit]) -> bytes:
    """``hits`` as bytes; vectors only when every hit has one (``with_vectors``)."""
    ids = [hit.image_id.encode() for hit in hits]
    uris = [hit.uri.encode() for hit in hits]
    vectors = [hit.vector for hit in hits]
    with_vectors = bool(hits) and all(v is not None for v in vectors)
    dim = len(vectors[0]) if with_vectors and vectors[0] is not None else 0
    parts = [
        HEADER.pack(MAGIC, len(hits), dim),
        np.asarray([hit.score for hit in hits], dtype="<f4").tobytes(),
        np.asarray([len(i) for i in ids], dtype="<u2").tobytes(),
        np.asarray([len(u) for u in uris], dtype="<u2").tobytes(),
        b"".join(ids),
        b"".join(uris),
    ]
    if dim:
        parts.append(np.stack(vectors).astype("<f4", copy=False).tobytes())  # type: ignore[arg-type]
    return b"".join(parts)


def decode_hits(data: bytes, dim: int) -> list[Hit]:
    """The hits in ``data``; their vectors must have ``dim`` values when present."""
    if len(data) < HEADER.size:
        raise HitsWireError("hits answer shorter than its header")
    magic, count, vector_dim = HEADER.unpack_from(data)
    if magic not in (MAGIC, MAGIC_WITHOUT_URIS) or vector_dim not in (0, dim):
        raise HitsWireError(f"not a hits answer of dimension {dim}")
    at = HEADER.size
    scores = np.frombuffer(data, "<f4", count, at)
    at += 4 * count
    id_lengths = np.frombuffer(data, "<u2", count, at)
    at += 2 * count
    uri_lengths = np.zeros(count, dtype="<u2")
    if magic == MAGIC:
        uri_lengths = np.frombuffer(data, "<u2", count, at)
        at += 2 * count
    ids_end = at + int(id_lengths.sum())
    uris_end = ids_end + int(uri_lengths.sum())
    vectors_size = 4 * count * vector_dim
    if len(data) != uris_end + vectors_size:
        raise HitsWireError(f"hits answer of {len(data)} bytes, expected {uris_end + vectors_size}")
    ids = _strings(data[at:ids_end], id_lengths, "id")
    uris = _strings(data[ids_end:uris_end], uri_lengths, "URI")
    vectors = np.frombuffer(data, "<f4", count * vector_dim, uris_end).reshape(count, vector_dim)
    if not np.isfinite(vectors).all() or not np.isfinite(scores).all():
        raise HitsWireError("hits answer with a value that is not finite")
    return [
        Hit(ids[n], float(scores[n]), vectors[n] if vector_dim else None, uris[n])
        for n in range(count)
    ]


def _strings(joined: bytes, lengths: np.ndarray, what: str) -> list[str]:
    """Split concatenated UTF-8 strings by their byte lengths."""
    strings, start = [], 0
    for length in lengths.tolist():
        try:
            strings.append(joined[start : start + length].decode())
        except UnicodeDecodeError as exc:
            raise HitsWireError(f"hits answer with an {what} that is not UTF-8: {exc}") from exc
        start += length
    return strings
