"""Event-time tumbling windows and the label buckets the feedback metrics use.

Kept apart from the aggregator so the window arithmetic (which window an
event lands in, how long a window is kept) is one small, tested thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY_S = 86_400


@dataclass(frozen=True)
class WindowSpec:
    """A tumbling window size and how long its windows are kept after they close."""

    name: str
    size_s: int
    retention_s: int

    def start_of(self, timestamp: float) -> int:
        """Start of the window that holds ``timestamp`` (seconds since the epoch)."""
        return math.floor(timestamp / self.size_s) * self.size_s


# 1-minute windows for live dashboards, hourly and daily for trends. Retention
# must exceed the allowed lateness plus one window so that every event that is
# not late still finds its window (checked by the aggregator).
WINDOWS: tuple[WindowSpec, ...] = (
    WindowSpec("1m", 60, 2 * 3600),
    WindowSpec("1h", 3600, 8 * DAY_S),
    WindowSpec("1d", DAY_S, 35 * DAY_S),
)

# Position buckets for labels: exact for the top three (where most clicks are),
# then widening ranges, so the label set stays small (Prometheus cardinality).
POSITION_BUCKETS: tuple[tuple[int, str], ...] = (
    (0, "0"),
    (1, "1"),
    (2, "2"),
    (3, "3-4"),
    (5, "5-9"),
    (10, "10-19"),
    (20, "20+"),
)

# Dwell histogram upper bounds in seconds (Prometheus base unit).
DWELL_BUCKETS_S: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300, 600, math.inf)


def position_bucket(position: int) -> str:
    """The label of the bucket that holds a 0-based result position."""
    label = POSITION_BUCKETS[0][1]
    for lower, name in POSITION_BUCKETS:
        if position >= lower:
            label = name
    return label


def dwell_bucket_index(dwell_s: float) -> int:
    """Index of the first histogram bucket whose upper bound holds ``dwell_s``."""
    for index, upper in enumerate(DWELL_BUCKETS_S):
        if dwell_s <= upper:
            return index
    return len(DWELL_BUCKETS_S) - 1
