"""The event ids an aggregator has counted, kept compactly for the lateness horizon.

Exact deduplication needs every id counted within the allowed lateness (an
hour by default): at a few hundred events per second that is close to a
million ids per partition set. Kept as a dict of id -> event time plus an
expiry heap of (time, id) tuples, each cost ~280 bytes (the id string, the
dict slot, the float, the tuple): ~220 MB at 220 events/s over an hour.

Here each id is an 8-byte BLAKE2b digest, held in one set (membership) and
in an ``array('Q')`` per time bucket (expiry): ~75 bytes per id. Buckets
are ``horizon / 60`` wide, so expiry drops whole buckets at once and keeps
an id at most one bucket (1/60 of the horizon) longer than its own time
requires — longer only makes deduplication safer. Expiry depends on the
watermark alone, so a replay keeps and drops exactly the same digests.

Two different ids with the same 64-bit digest would make the second look
like a duplicate: with n ids in the horizon the chance of any such pair is
about n² / 2^65, 2e-8 for a million.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from typing import Any

BUCKETS_PER_HORIZON = 60


def digest(event_id: str) -> int:
    """A stable 64-bit digest (``hash()`` of a str differs between processes)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


class SeenEvents:
    """Digests of counted event ids, by event-time bucket (see the module docstring)."""

    def __init__(self, horizon_s: float) -> None:
        self.bucket_s = max(1.0, horizon_s / BUCKETS_PER_HORIZON)
        self._digests: set[int] = set()
        self._buckets: dict[int, array[int]] = {}  # bucket number -> its digests
        # When the oldest bucket ends: expiry is called for nearly every event, and
        # until the horizon passes this there is nothing to look at.
        self._oldest_end = math.inf

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, event_id: str, timestamp: float) -> bool:
        """Record an id; False when it was already there (a duplicate)."""
        value = digest(event_id)
        if value in self._digests:
            return False
        self._digests.add(value)
        bucket = math.floor(timestamp / self.bucket_s)
        self._buckets.setdefault(bucket, array("Q")).append(value)
        self._oldest_end = min(self._oldest_end, self._end(bucket))
        return True

    def expire(self, horizon: float) -> None:
        """Forget the buckets that end at or before ``horizon`` (event time)."""
        if horizon < self._oldest_end:
            return
        for bucket in [b for b in self._buckets if self._end(b) <= horizon]:
            self._digests.difference_update(self._buckets.pop(bucket))
        self._oldest_end = self._earliest_end()

    def _end(self, bucket: int) -> float:
        return (bucket + 1) * self.bucket_s

    def _earliest_end(self) -> float:
        return min((self._end(b) for b in self._buckets), default=math.inf)

    def to_json(self) -> dict[str, Any]:
        """Bucket number -> its digests as base64 of little-endian uint64s."""
        buckets = {}
        for bucket, values in sorted(self._buckets.items()):
            if sys.byteorder == "big":
                values = array("Q", values)  # a copy: the live bucket keeps its order
                values.byteswap()
            buckets[str(bucket)] = base64.b64encode(values.tobytes()).decode()
        return {"bucket_s": self.bucket_s, "buckets": buckets}

    @classmethod
    def from_json(cls, data: dict[str, Any], horizon_s: float) -> SeenEvents:
        """The checkpointed digests; a checkpoint written before digests (id -> event
        time) is converted."""
        seen = cls(horizon_s)
        if "buckets" not in data:  # the earlier format: {event id: event time}
            for event_id, timestamp in data.items():
                seen.add(event_id, float(timestamp))
            return seen
        stored_bucket_s = float(data["bucket_s"])
        for bucket, encoded in data["buckets"].items():
            values = array("Q", base64.b64decode(encoded))
            if sys.byteorder == "big":
                values.byteswap()
            number = int(bucket)
            if stored_bucket_s != seen.bucket_s:
                # The horizon changed between runs: file each digest under the new
                # bucket holding its old bucket's end, so that none expires early.
                number = math.floor((number + 1) * stored_bucket_s / seen.bucket_s)
            seen._buckets.setdefault(number, array("Q")).extend(values)
            seen._digests.update(values)
        seen._oldest_end = seen._earliest_end()
        return seen
