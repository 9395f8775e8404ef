"""Fetch waits that grow while a topic is idle and drop at the first record.

The embedded broker (Tansu) holds every fetch for its whole ``max_wait``
even when records arrive meanwhile, so a short wait is what makes a hop
fast (20 ms: an agent hop p50 5.7 ms instead of 407 ms at Faust's 1500 ms).
But a consumer fetching every 20 ms with nothing to read costs its process
and the broker CPU for nothing: an idle `visearch run` used 0.37 of a core.
So the wait doubles after every empty fetch up to ``idle_ms`` and falls back
to ``active_ms`` as soon as a fetch returns records. The price is paid once
per idle period: the first record after it waits for the fetch in flight,
at most ``idle_ms`` per hop (``bench.freshness`` measures it).
"""

from __future__ import annotations


class FetchBackoff:
    """The fetch wait to use next, from whether the last fetch returned records."""

    def __init__(self, active_ms: int, idle_ms: int) -> None:
        self.active_ms = active_ms
        self.idle_ms = max(active_ms, idle_ms)
        self.current_ms = active_ms

    def update(self, got_records: bool) -> int:
        """Record a fetch's outcome; returns the wait for the next one."""
        if got_records:
            self.current_ms = self.active_ms
        else:
            self.current_ms = min(self.idle_ms, max(1, self.current_ms) * 2)
        return self.current_ms
