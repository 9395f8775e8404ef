"""Prometheus exposition of the feedback state, read at scrape time.

A custom collector rather than client-side Counter objects: the counters
are the aggregator's own totals, which survive a restart through the
checkpoint and are exactly what a replay reproduces, so a scrape after a
restart continues the series instead of resetting it. Reading at scrape
time also means the CTR gauges lag the stream only by processing time.

Conventions (Prometheus client_python's): counters end in ``_total``, durations are seconds,
no user or image ids as labels (position buckets and model versions only).
Dashboards compute CTR as a ratio of counter rates, e.g.
``sum(rate(visearch_feedback_clicks_total[5m])) /
sum(rate(visearch_feedback_impressions_total[5m]))``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from feedback.state import FeedbackState
from feedback.windows import DWELL_BUCKETS_S, WINDOWS

PREFIX = "visearch_feedback"


class FeedbackCollector(Collector):
    """Counters, the dwell histogram and gauges from a :class:`FeedbackState`."""

    def __init__(self, state: FeedbackState) -> None:
        self.state = state

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        with self.state.lock:
            view = self.state.view()
            totals = view.totals()
            statuses = view.status_counts()
            buckets, dwell_ms = view.dwell_histogram()
            windows = {spec.name: view.window_ctr(spec.name) for spec in WINDOWS}
            spent = view.time_spent_averages()
            watermark = view.watermark
            open_sessions = sum(len(a.sessions) for a in view.aggregators)
            pairs = self.state.pairs_emitted
        labels = ["position_bucket", "model_version"]
        impressions = CounterMetricFamily(
            f"{PREFIX}_impressions", "Results shown (deduplicated impressions)", labels=labels
        )
        clicks = CounterMetricFamily(
            f"{PREFIX}_clicks", "Results clicked (deduplicated clicks)", labels=labels
        )
        for (bucket, model), (shown, clicked) in totals.items():
            impressions.add_metric([bucket, model or "unknown"], shown)
            clicks.add_metric([bucket, model or "unknown"], clicked)
        yield impressions
        yield clicks

        events = CounterMetricFamily(
            f"{PREFIX}_events",
            "Interaction events by outcome (counted, duplicate, late_event, future_timestamp)",
            labels=["status"],
        )
        for status, count in statuses.items():
            events.add_metric([status], count)
        yield events
        yield CounterMetricFamily(
            f"{PREFIX}_pairs", "Labelled pairs published for trainers", value=pairs
        )

        cumulative, running = [], 0
        for upper, count in zip(DWELL_BUCKETS_S, buckets, strict=True):
            running += count
            cumulative.append(("+Inf" if upper == float("inf") else str(upper), running))
        yield HistogramMetricFamily(
            f"{PREFIX}_dwell_seconds",
            "Time spent on a suggested image after clicking it",
            buckets=cumulative,
            sum_value=dwell_ms / 1000.0,
        )

        ctr_gauge = GaugeMetricFamily(
            f"{PREFIX}_window_ctr",
            "CTR of the live event-time window (clicks / impressions); absent without impressions",
            labels=["window"],
        )
        for name, cell in windows.items():
            if cell["ctr"] is not None:
                ctr_gauge.add_metric([name], cell["ctr"])
        yield ctr_gauge

        spent_gauge = GaugeMetricFamily(
            f"{PREFIX}_time_spent_seconds",
            "Average time spent on suggested images per active user, over 1, 7 and 30 days",
            labels=["period"],
        )
        for period, seconds in spent.items():
            if seconds is not None:
                spent_gauge.add_metric([period], seconds)
        yield spent_gauge

        yield GaugeMetricFamily(
            f"{PREFIX}_open_sessions", "Search sessions not yet closed", value=open_sessions
        )
        if watermark is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_watermark_timestamp_seconds",
                "Largest event time aggregated",
                value=watermark,
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_watermark_lag_seconds",
                "Wall clock minus the largest event time aggregated",
                value=max(0.0, time.time() - watermark),
            )
