"""Read-side of the feedback state: sums over partitions, CTR and time spent.

Every figure here is a sum (or a union of user sets) over the partition
aggregators, so it does not depend on the order partitions were consumed in.

Definitions (docs/feedback.md, Metrics):

- CTR = clicks / impressions over a window or over all time.
- Time spent on suggested images = dwell time logged on displayed results.
  The daily, weekly and monthly averages are, for the 1, 7 and 30 days ending
  with the latest day that has events, total dwell time divided by the
  number of distinct users with dwell time in those days.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from feedback.aggregation import ALL, CLICKS, IMPRESSIONS, PartitionAggregator, bucket_labels
from feedback.windows import DAY_S, WINDOWS

AVERAGE_PERIODS_DAYS = {"daily": 1, "weekly": 7, "monthly": 30}


def ctr(impressions: int, clicks: int) -> float | None:
    """Click-through rate, or None when nothing was shown (0/0 is not 0 %)."""
    return clicks / impressions if impressions else None


class FeedbackView:
    """Combined figures over a set of partition aggregators (read under the caller's lock)."""

    def __init__(self, aggregators: Iterable[PartitionAggregator]) -> None:
        self.aggregators = list(aggregators)

    @property
    def watermark(self) -> float | None:
        marks = [a.watermark for a in self.aggregators if a.watermark != float("-inf")]
        return max(marks) if marks else None

    def totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(position bucket, model version) -> (impressions, clicks), all time."""
        merged: dict[tuple[str, str], list[int]] = {}
        for agg in self.aggregators:
            for key, (impressions, clicks) in agg.totals.items():
                cell = merged.setdefault(key, [0, 0])
                cell[0] += impressions
                cell[1] += clicks
        return {key: (v[0], v[1]) for key, v in sorted(merged.items())}

    def status_counts(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for agg in self.aggregators:
            for status, count in agg.status_counts.items():
                merged[status] = merged.get(status, 0) + count
        return dict(sorted(merged.items()))

    def dwell_histogram(self) -> tuple[list[int], int]:
        """Per-bucket counts (not cumulative) and the sum in milliseconds."""
        buckets = [0] * len(self.aggregators[0].dwell_buckets) if self.aggregators else []
        total_ms = 0
        for agg in self.aggregators:
            buckets = [a + b for a, b in zip(buckets, agg.dwell_buckets, strict=True)]
            total_ms += agg.dwell_sum_ms
        return buckets, total_ms

    def window_cell(self, window: str, start: int, cell: str = ALL) -> list[int]:
        """Summed counters of one window cell (zeros when nothing landed there)."""
        summed = [0, 0, 0, 0]
        for agg in self.aggregators:
            values = agg.windows[window].get(start, {}).get(cell)
            if values:
                summed = [a + b for a, b in zip(summed, values, strict=True)]
        return summed

    def latest_window_start(self, window: str) -> int | None:
        """Start of the window that holds the watermark (the live one)."""
        mark = self.watermark
        if mark is None:
            return None
        spec = next(s for s in WINDOWS if s.name == window)
        return spec.start_of(mark)

    def window_ctr(self, window: str) -> dict[str, Any]:
        """Impressions, clicks and CTR of the live window of each size."""
        start = self.latest_window_start(window)
        if start is None:
            return {"start": None, "impressions": 0, "clicks": 0, "ctr": None}
        values = self.window_cell(window, start)
        return {
            "start": start,
            "impressions": values[IMPRESSIONS],
            "clicks": values[CLICKS],
            "ctr": ctr(values[IMPRESSIONS], values[CLICKS]),
        }

    def by_position(self) -> list[dict[str, Any]]:
        """All-time impressions, clicks and CTR per position bucket."""
        return self._by(lambda bucket, _model: bucket, bucket_labels())

    def by_model(self) -> list[dict[str, Any]]:
        """All-time impressions, clicks and CTR per model version."""
        models = sorted({model for _, model in self.totals()})
        return self._by(lambda _bucket, model: model, models)

    def _by(self, key_of: Any, order: list[str]) -> list[dict[str, Any]]:
        sums = {key: [0, 0] for key in order}
        for (bucket, model), (impressions, clicks) in self.totals().items():
            cell = sums.setdefault(key_of(bucket, model), [0, 0])
            cell[0] += impressions
            cell[1] += clicks
        return [
            {"key": key, "impressions": i, "clicks": c, "ctr": ctr(i, c)}
            for key, (i, c) in sums.items()
        ]

    def time_spent_averages(self) -> dict[str, float | None]:
        """Average seconds per active user over the latest 1, 7 and 30 days."""
        per_day: dict[int, dict[str, int]] = {}
        for agg in self.aggregators:
            for day, day_users in agg.time_spent.items():
                merged = per_day.setdefault(day, {})
                for user, ms in day_users.items():
                    merged[user] = merged.get(user, 0) + ms
        if not per_day:
            return {name: None for name in AVERAGE_PERIODS_DAYS}
        last_day = max(per_day)
        averages: dict[str, float | None] = {}
        for name, days in AVERAGE_PERIODS_DAYS.items():
            first = last_day - (days - 1) * DAY_S
            users: set[str] = set()
            total_ms = 0
            for day, spent in per_day.items():
                if first <= day <= last_day:
                    users.update(spent)
                    total_ms += sum(spent.values())
            averages[name] = total_ms / 1000.0 / len(users) if users else None
        return averages

    def summary(self) -> dict[str, Any]:
        """Everything the dashboard panel and ``/v1/feedback`` show, JSON-ready."""
        totals = self.totals()
        impressions = sum(i for i, _ in totals.values())
        clicks = sum(c for _, c in totals.values())
        dwell_buckets, dwell_ms = self.dwell_histogram()
        return {
            "watermark": self.watermark,
            "impressions": impressions,
            "clicks": clicks,
            "ctr": ctr(impressions, clicks),
            "by_position": self.by_position(),
            "by_model": self.by_model(),
            "windows": {spec.name: self.window_ctr(spec.name) for spec in WINDOWS},
            "time_spent_s": self.time_spent_averages(),
            "dwell": {"events": sum(dwell_buckets), "seconds": dwell_ms / 1000.0},
            "events": self.status_counts(),
            "open_sessions": sum(len(a.sessions) for a in self.aggregators),
        }
