"""Online aggregation of interactions: deduplicated, event-time windowed, replayable.

One :class:`PartitionAggregator` per partition of the interactions topic.
Interactions are keyed by search id, so every copy of an event and every
event of a search session lands in the same partition, in log order. The
aggregator's state is therefore a pure function of its partition's log:
replaying the log from offset 0 into a fresh aggregator reproduces every
counter exactly, and the sums over partitions do not depend on how the
partitions were interleaved.

Per event, in order:

1. **Late** (event time older than the partition's watermark, the largest
   event time seen, minus ``allowed_lateness_s``): not aggregated, reported
   as ``late_event`` (the caller dead-letters it). Deduplication can only be
   exact inside the lateness horizon, so an event from beyond it cannot be
   counted safely.
2. **Future** (event time more than ``max_future_s`` after the broker's
   record timestamp, which a replay sees unchanged): ``future_timestamp``.
3. **Duplicate** (``event_id`` already counted): ignored.
4. Otherwise counted: totals by position bucket and model version (the
   Prometheus counters; versions the model registry never named count as
   ``other``, see ``AggregationPolicy.model_label``), tumbling windows of
   1 min / 1 h / 1 day (overall, by position bucket, by model version), dwell
   histogram and time spent per user per day, and the search session for
   labelled pairs.

Sessions close when the watermark passes their last event by
``session_gap_s``; their pairs are returned from :meth:`process`. Expiry of
windows, dedup ids and sessions is driven by the watermark alone, never by
the wall clock, which is what keeps a replay identical.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from feedback.dedup import SeenEvents
from feedback.pairs import PairPolicy, Session, session_pairs
from feedback.windows import (
    DWELL_BUCKETS_S,
    POSITION_BUCKETS,
    WINDOWS,
    dwell_bucket_index,
    position_bucket,
)
from streams.schemas import Interaction, LabeledPair

# Window counters: [impressions, clicks, dwell events, dwell milliseconds], per
# cell: "all", "pos:<position bucket>" and "model:<model version>".
IMPRESSIONS, CLICKS, DWELLS, DWELL_MS = range(4)
ALL = "all"


@dataclass(frozen=True)
class AggregationPolicy:
    """Time rules of the aggregation; the defaults suit a web product."""

    allowed_lateness_s: float = 3600.0
    max_future_s: float = 300.0
    session_gap_s: float = 600.0
    pairs: PairPolicy = field(default_factory=PairPolicy)
    # Maps an event's model version to the label it is counted under (the
    # service passes streams.model_registry.KnownModels.label, so only
    # registered versions become labels); None counts every version as sent.
    model_label: Callable[[str], str] | None = field(default=None, compare=False)

    def check(self) -> None:
        for spec in WINDOWS:
            if spec.retention_s < self.allowed_lateness_s + spec.size_s:
                raise ValueError(
                    f"window {spec.name}: retention {spec.retention_s}s is shorter than the "
                    f"allowed lateness plus one window"
                )


@dataclass(frozen=True)
class Outcome:
    """What happened to one event, and the pairs of the sessions it closed."""

    status: str  # counted | duplicate | late_event | future_timestamp
    pairs: tuple[LabeledPair, ...] = ()


class PartitionAggregator:
    """The feedback state of one interactions partition (see the module docstring)."""

    def __init__(self, policy: AggregationPolicy | None = None) -> None:
        self.policy = policy or AggregationPolicy()
        self.policy.check()
        self.watermark = float("-inf")
        # (position bucket, model version) -> [impressions, clicks]: monotonic totals.
        self.totals: dict[tuple[str, str], list[int]] = {}
        # window name -> window start -> cell key -> counters
        self.windows: dict[str, dict[int, dict[str, list[int]]]] = {w.name: {} for w in WINDOWS}
        self.dwell_buckets = [0] * len(DWELL_BUCKETS_S)
        self.dwell_sum_ms = 0
        # day start -> user id -> dwell milliseconds on suggested images
        self.time_spent: dict[int, dict[str, int]] = {}
        self.status_counts: dict[str, int] = {}
        self.seen = SeenEvents(self.policy.allowed_lateness_s)
        self.sessions: dict[str, Session] = {}
        self._closed: dict[str, float] = {}  # search id -> close time, until past lateness
        self._session_expiry: list[tuple[float, str]] = []
        self._last_sweep = float("-inf")

    # ------------------------------------------------------------------ events

    def process(self, event: Interaction, record_time: float) -> Outcome:
        """Aggregate one event; ``record_time`` is the broker's timestamp of its record."""
        timestamp = event.timestamp
        if timestamp < self.watermark - self.policy.allowed_lateness_s:
            return self._outcome("late_event")
        if timestamp > record_time + self.policy.max_future_s:
            return self._outcome("future_timestamp")
        if not self.seen.add(event.event_id, timestamp):
            return self._outcome("duplicate")
        self._count(event)
        self._track_session(event)
        pairs: list[LabeledPair] = []
        if timestamp > self.watermark:
            self.watermark = timestamp
            pairs = self._close_sessions()
            self._expire()
        return self._outcome("counted", pairs)

    def _outcome(self, status: str, pairs: list[LabeledPair] | None = None) -> Outcome:
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        return Outcome(status, tuple(pairs or ()))

    def _count(self, event: Interaction) -> None:
        bucket = position_bucket(event.position)
        increments: tuple[tuple[int, int], ...]
        if event.type == "impression":
            increments = ((IMPRESSIONS, 1),)
        elif event.type == "click":
            increments = ((CLICKS, 1),)
        else:
            increments = ((DWELLS, 1), (DWELL_MS, event.dwell_ms))
            self.dwell_buckets[dwell_bucket_index(event.dwell_ms / 1000.0)] += 1
            self.dwell_sum_ms += event.dwell_ms
            day = WINDOWS[-1].start_of(event.timestamp)
            users = self.time_spent.setdefault(day, {})
            users[event.user_id] = users.get(event.user_id, 0) + event.dwell_ms
        model = event.model_version
        if self.policy.model_label is not None:
            model = self.policy.model_label(model)
        if event.type != "dwell":
            total = self.totals.setdefault((bucket, model), [0, 0])
            total[0 if event.type == "impression" else 1] += 1
        cells = (ALL, f"pos:{bucket}", f"model:{model}")
        for spec in WINDOWS:
            window = self.windows[spec.name].setdefault(spec.start_of(event.timestamp), {})
            for cell in cells:
                values = window.get(cell)
                if values is None:
                    values = window[cell] = [0, 0, 0, 0]
                for index, amount in increments:
                    values[index] += amount

    # ---------------------------------------------------------------- sessions

    def _track_session(self, event: Interaction) -> None:
        if event.search_id in self._closed:
            self.status_counts["after_session_close"] = (
                self.status_counts.get("after_session_close", 0) + 1
            )
            return
        session = self.sessions.get(event.search_id)
        if session is None:
            session = Session(
                event.search_id,
                event.user_id,
                event.query_image_id,
                event.model_version,
                event.timestamp,
            )
            self.sessions[event.search_id] = session
        if event.timestamp > session.last_seen:
            session.last_seen = event.timestamp
        heapq.heappush(
            self._session_expiry,
            (session.last_seen + self.policy.session_gap_s, event.search_id),
        )
        if event.type == "impression":
            session.shown.setdefault(event.position, event.displayed_image_id)
        elif event.type == "click":
            session.shown.setdefault(event.position, event.displayed_image_id)
            session.clicked.setdefault(event.displayed_image_id, event.position)

    def _close_sessions(self, force: bool = False) -> list[LabeledPair]:
        pairs: list[LabeledPair] = []
        expiry = self._session_expiry
        while expiry and (force or expiry[0][0] < self.watermark):
            due, search_id = heapq.heappop(expiry)
            session = self.sessions.get(search_id)
            if session is None or (
                not force and session.last_seen + self.policy.session_gap_s != due
            ):
                continue  # a stale entry: the session saw a later event
            del self.sessions[search_id]
            closed_at = session.last_seen + self.policy.session_gap_s
            self._closed[search_id] = closed_at
            pairs.extend(session_pairs(session, closed_at, self.position_ctr, self.policy.pairs))
        return pairs

    def close_all_sessions(self) -> list[LabeledPair]:
        """Close every open session now (end of a bounded replay, tests)."""
        return self._close_sessions(force=True)

    def position_ctr(self, position: int) -> tuple[int, int]:
        """``(impressions, clicks)`` of ``position``'s bucket over every model version."""
        bucket = position_bucket(position)
        shown = clicked = 0
        for (b, _), (impressions, clicks) in self.totals.items():
            if b == bucket:
                shown += impressions
                clicked += clicks
        return shown, clicked

    # ------------------------------------------------------------------ expiry

    def _expire(self) -> None:
        """Drop dedup ids, closed-session markers and windows past their horizon.

        Runs when the watermark has moved a minute since the last sweep; the
        horizon depends on the watermark only, so a replay expires the same.
        """
        horizon = self.watermark - self.policy.allowed_lateness_s
        self.seen.expire(horizon)
        if self.watermark - self._last_sweep < 60:
            return
        self._last_sweep = self.watermark
        self._closed = {sid: at for sid, at in self._closed.items() if at >= horizon}
        for spec in WINDOWS:
            oldest = self.watermark - spec.retention_s
            windows = self.windows[spec.name]
            for start in [s for s in windows if s + spec.size_s < oldest]:
                del windows[start]
        oldest_day = self.watermark - WINDOWS[-1].retention_s
        for day in [d for d in self.time_spent if d + WINDOWS[-1].size_s < oldest_day]:
            del self.time_spent[day]

    # ------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, Any]:
        """Everything, as JSON-ready data, for checkpoints (and replay comparisons)."""
        return {
            "watermark": self.watermark if self.watermark != float("-inf") else None,
            "totals": [[b, m, *v] for (b, m), v in sorted(self.totals.items())],
            "windows": {
                name: {str(start): cells for start, cells in sorted(windows.items())}
                for name, windows in self.windows.items()
            },
            "dwell_buckets": self.dwell_buckets,
            "dwell_sum_ms": self.dwell_sum_ms,
            "time_spent": {str(day): users for day, users in sorted(self.time_spent.items())},
            "status_counts": dict(sorted(self.status_counts.items())),
            "seen": self.seen.to_json(),
            "sessions": [s.to_json() for s in self.sessions.values()],
            "closed": self._closed,
            "last_sweep": self._last_sweep if self._last_sweep != float("-inf") else None,
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], policy: AggregationPolicy | None = None
    ) -> PartitionAggregator:
        agg = cls(policy)
        agg.watermark = float("-inf") if data["watermark"] is None else float(data["watermark"])
        agg.totals = {(b, m): [int(i), int(c)] for b, m, i, c in data["totals"]}
        agg.windows = {
            name: {int(start): cells for start, cells in windows.items()}
            for name, windows in data["windows"].items()
        }
        agg.dwell_buckets = [int(n) for n in data["dwell_buckets"]]
        agg.dwell_sum_ms = int(data["dwell_sum_ms"])
        agg.time_spent = {int(day): users for day, users in data["time_spent"].items()}
        agg.status_counts = dict(data["status_counts"])
        agg.seen = SeenEvents.from_json(data["seen"], agg.policy.allowed_lateness_s)
        for raw in data["sessions"]:
            session = Session.from_json(raw)
            agg.sessions[session.search_id] = session
            agg._session_expiry.append(
                (session.last_seen + agg.policy.session_gap_s, session.search_id)
            )
        heapq.heapify(agg._session_expiry)
        agg._closed = {key: float(at) for key, at in data["closed"].items()}
        agg._last_sweep = float("-inf") if data["last_sweep"] is None else data["last_sweep"]
        return agg


def bucket_labels() -> list[str]:
    """Position bucket labels in rank order (for tables and the page)."""
    return [label for _, label in POSITION_BUCKETS]
