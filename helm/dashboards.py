"""The operations dashboard, generated with grafana-foundation-sdk (Grafana 11.6 models).

Runs in the deploy-tools venv: ``.venv-deploy/bin/python helm/dashboards.py``
rewrites ``helm/visearch/dashboards/visearch-ops.json``, which the chart ships
as a ConfigMap. Code, not hand-edited JSON, so panels stay consistent; the
test suite regenerates it and compares, and parses every query with promtool.
Metric names: the API's own (visearch/api.py), the feedback counters
(issue 7) and kafka-exporter's consumer-group metrics for lag.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder

OUT = Path(__file__).resolve().parent / "visearch" / "dashboards" / "visearch-ops.json"
UPLOADS = 'topic=~".*image-uploads"'
DEAD_LETTERS = 'topic=~".*dead-letter"'

# (title, unit, [(expr, legend)])
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Search latency",
        "s",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                "(rate(visearch_search_duration_seconds_bucket[5m])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
    ),
    (
        "Searches",
        "reqps",
        [("sum by (outcome) (rate(visearch_searches_total[5m]))", "{{outcome}}")],
    ),
    ("Uploads accepted", "reqps", [("sum(rate(visearch_uploads_total[5m]))", "uploads/s")]),
    (
        "Embedding lag (uploads waiting)",
        "short",
        [(f"sum by (consumergroup) (kafka_consumergroup_lag{{{UPLOADS}}})", "{{consumergroup}}")],
    ),
    (
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
    (
        "Dead letters",
        "short",
        [(f"sum(rate(kafka_topic_partition_current_offset{{{DEAD_LETTERS}}}[5m]))", "per second")],
    ),
    (
        "CTR",
        "percentunit",
        [
            (
                "sum(rate(visearch_clicks_total[15m]))"
                " / sum(rate(visearch_impressions_total[15m]))",
                "CTR",
            )
        ],
    ),
]


def build() -> str:
    """The dashboard as stable, pretty-printed JSON."""
    board = (
        dashboard.Dashboard("visearch operations")
        .uid("visearch-ops")
        .tags(["visearch"])
        .refresh("30s")
        .time("now-6h", "now")
    )
    for title, unit, queries in PANELS:
        panel = timeseries.Panel().title(title).unit(unit).height(8).span(12)
        for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
            panel = panel.with_target(
                prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
            )
        board = board.with_panel(panel)
    built = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))
    return json.dumps(built, indent=2, sort_keys=True) + "\n"


def queries() -> list[str]:
    """Every PromQL expression on the dashboard (for promtool in the tests)."""
    return [expr for _, _, panel in PANELS for expr, _ in panel]


if __name__ == "__main__":
    if sys.argv[1:] == ["--queries"]:
        print(json.dumps(queries()))
    else:
        OUT.write_text(build())
        print(f"wrote {OUT}")
