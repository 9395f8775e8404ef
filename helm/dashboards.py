"""The operations dashboard, generated with grafana-foundation-sdk (Grafana 11.6 models).

Runs in the deploy-tools venv: ``.venv-deploy/bin/python helm/dashboards.py``
rewrites ``helm/visearch/dashboards/visearch-ops.json``, which the chart ships
as a ConfigMap. Code, not hand-edited JSON, so panels stay consistent; the
test suite regenerates it and compares, and parses every query with promtool.
Metric names: the API's own (visearch/api/context.py: searches, uploads;
streams/dead_letter_monitor.py: dead letters), the feedback aggregator's
(feedback/prometheus.py), each shard's (visearch/processes/shard_metrics.py: upload ->
searchable, consumer lag) and kafka-exporter's consumer-group metrics for the
embedding workers' lag.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder

OUT = Path(__file__).resolve().parent / "visearch" / "dashboards" / "visearch-ops.json"
UPLOADS = 'topic=~".*image-uploads"'
CLICKS = "visearch_feedback_clicks_total"
IMPRESSIONS = "visearch_feedback_impressions_total"


class Panel(NamedTuple):
    title: str
    unit: str
    # (PromQL, legend)
    queries: list[tuple[str, str]]
    kind: str = "timeseries"  # or "stat": the latest value of each series
    description: str = ""


class Row(NamedTuple):
    title: str
    panels: list[Panel]


def ctr(by: str = "", window: str = "15m") -> str:
    """CTR as a ratio of counter rates (docs/feedback.md), optionally per label."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({CLICKS}[{window}])) / sum{group} (rate({IMPRESSIONS}[{window}]))"


def quantiles(histogram: str, window: str, qs: tuple[float, ...]) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[{window}])))",
            f"p{round(q * 100)}",
        )
        for q in qs
    ]


ROWS: list[Row] = [
    Row(
        "Search and ingest",
        [
            Panel(
                "Search latency",
                "s",
                quantiles("visearch_search_duration_seconds", "5m", (0.5, 0.95, 0.99)),
            ),
            Panel(
                "Searches",
                "reqps",
                [("sum by (outcome) (rate(visearch_searches_total[5m]))", "{{outcome}}")],
            ),
            Panel(
                "Uploads accepted",
                "reqps",
                [("sum(rate(visearch_uploads_total[5m]))", "uploads/s")],
            ),
            Panel(
                "Embedding lag (uploads waiting)",
                "short",
                [
                    (
                        f"sum by (consumergroup) (kafka_consumergroup_lag{{{UPLOADS}}})",
                        "{{consumergroup}}",
                    )
                ],
            ),
            Panel(
                "Upload to searchable, in the shards",
                "s",
                quantiles("visearch_shard_freshness_seconds", "5m", (0.5, 0.99)),
                description="measured where each vector is applied (every shard copy)",
            ),
            Panel(
                "Online recall@10 (sampled live queries vs exact)",
                "percentunit",
                [("min by (shard) (visearch_shard_recall_at_10)", "shard {{shard}}")],
            ),
            Panel(
                "Shard consumer lag (embeddings not yet applied)",
                "short",
                [("max by (shard) (visearch_shard_consumer_lag)", "shard {{shard}}")],
            ),
            Panel(
                "Freshness estimate (lag / consume rate)",
                "s",
                [
                    (
                        f"sum(kafka_consumergroup_lag{{{UPLOADS}}}) / clamp_min(sum(rate("
                        f"kafka_consumergroup_current_offset{{{UPLOADS}}}[5m])), 0.001)",
                        "seconds behind",
                    )
                ],
            ),
        ],
    ),
    Row(
        "Feedback: CTR and time spent",
        [
            Panel("CTR", "percentunit", [(ctr(), "CTR")], description="clicks / impressions"),
            Panel(
                "CTR by position bucket",
                "percentunit",
                [(ctr("position_bucket"), "position {{position_bucket}}")],
                description="users click the top results whatever they are: the position bias",
            ),
            Panel(
                "CTR by model version",
                "percentunit",
                [(ctr("model_version"), "{{model_version}}")],
                description="the model version that ranked the results: two encoders, online",
            ),
            Panel(
                "Time spent per active user",
                "s",
                [("max by (period) (visearch_feedback_time_spent_seconds)", "{{period}}")],
                kind="stat",
                description="dwell on suggested images, averaged per active user "
                "over the last 1 (daily), 7 (weekly) and 30 (monthly) days",
            ),
            Panel(
                "Dwell time on clicked images",
                "s",
                quantiles("visearch_feedback_dwell_seconds", "15m", (0.5, 0.9, 0.99)),
            ),
            Panel(
                "Feedback events by status",
                "ops",
                [("sum by (status) (rate(visearch_feedback_events_total[5m]))", "{{status}}")],
                description="counted, duplicate, late_event, future_timestamp",
            ),
            Panel(
                "Feedback lag (wall clock - newest event time)",
                "s",
                [("max(visearch_feedback_watermark_lag_seconds)", "seconds behind")],
                description="also grows while no interactions arrive",
            ),
            Panel(
                "Labelled pairs published",
                "ops",
                [("sum(rate(visearch_feedback_pairs_total[5m]))", "pairs/s")],
            ),
        ],
    ),
    Row(
        "Failures",
        [
            Panel(
                "Dead letters by code",
                "ops",
                [
                    (
                        "sum by (source, code) (max without (instance, pod) "
                        "(rate(visearch_dead_letters_total[5m])))",
                        "{{source}} {{code}}",
                    )
                ],
                description="every API pod follows the dead-letter topic and serves the same "
                "totals (hence max across pods); `visearch dlq list --code CODE`",
            ),
        ],
    ),
]


def _panel(spec: Panel) -> timeseries.Panel | stat.Panel:
    builder = timeseries.Panel() if spec.kind == "timeseries" else stat.Panel()
    builder = builder.title(spec.title).unit(spec.unit).height(8).span(12)
    if spec.description:
        builder = builder.description(spec.description)
    for ref, (expr, legend) in zip("ABCDEFGH", spec.queries, strict=False):
        builder = builder.with_target(
            prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
        )
    return builder


def build() -> str:
    """The dashboard as stable, pretty-printed JSON."""
    board = (
        dashboard.Dashboard("visearch operations")
        .uid("visearch-ops")
        .tags(["visearch"])
        .refresh("30s")
        .time("now-6h", "now")
    )
    for row in ROWS:
        board = board.with_row(dashboard.Row(row.title))
        for spec in row.panels:
            board = board.with_panel(_panel(spec))
    built = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))
    return json.dumps(built, indent=2, sort_keys=True) + "\n"


def queries() -> list[str]:
    """Every PromQL expression on the dashboard (for promtool in the tests)."""
    return [expr for row in ROWS for spec in row.panels for expr, _ in spec.queries]


if __name__ == "__main__":
    if sys.argv[1:] == ["--queries"]:
        print(json.dumps(queries()))
    else:
        OUT.write_text(build())
        print(f"wrote {OUT}")
