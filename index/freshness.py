"""Upload -> searchable, measured where it happens: in the shard that applies the vector.

In a cluster the only freshness signal used to be the upload topic's consumer
lag (kafka-exporter): it says how far the embedding workers are behind, not
when an image can actually be found. Each shard now records, for every vector
it applies, the time from the upload event's ``uploaded_at`` (the API's or
backend's clock) to the moment a search can return it (this process's clock),
in fixed buckets that Prometheus reads as a histogram. Clock skew between
machines shows up in it as an offset; NTP keeps that to milliseconds.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict

# Seconds: fine below the 1 s goal, coarse above it (a replay after a restart
# applies hours-old uploads; they all land in the last buckets).
BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class FreshnessHistogram:
    """Counts of upload -> applied delays by bucket, their sum and count (thread-safe)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last: above every bucket
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)  # a clock a little behind the uploader's
        with self._lock:
            self._counts[bisect_left(self.buckets, seconds)] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``, and the sum of delays."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, total


class RecentTimes:
    """When each recently applied image became searchable, for the last ``capacity`` images.

    Benchmarks, the self-test and tests wait on it (upload -> searchable of a
    given image). It was a plain dict and grew by one entry per image for the
    life of the process: ~100 bytes an image, 0.9 GB a day at 100 uploads/s.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._times: OrderedDict[str, float] = OrderedDict()

    def __setitem__(self, image_id: str, at: float) -> None:
        self._times[image_id] = at
        self._times.move_to_end(image_id)
        while len(self._times) > self.capacity:
            self._times.popitem(last=False)

    def __getitem__(self, image_id: str) -> float:
        return self._times[image_id]

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._times

    def __len__(self) -> int:
        return len(self._times)

    def get(self, image_id: str) -> float | None:
        return self._times.get(image_id)
