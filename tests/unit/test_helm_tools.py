"""The deployment through the real offline checkers, as CI would run them.

helm lint --strict (Helm's Go SDK), kubernetes-validate --strict against the
bundled Kubernetes 1.30 schemas, checkov's Kubernetes checks (every finding
fixed or skipped in the chart with a reason), hadolint on the Dockerfile, and
promtool on the alert rules (syntax and alert unit tests) and dashboard queries.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helm_support import (
    CHART,
    PRODUCTION_VALUES,
    REPO_ROOT,
    find,
    render,
    render_text,
    run,
    tool,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from feedback.prometheus import FeedbackCollector
from feedback.state import FeedbackState
from index.shard import IndexShard
from streams.dead_letter_monitor import DeadLetterMonitor
from streams.schemas import ImageEmbedded, Interaction, vector_to_b64
from streams.settings import Settings
from streams.shard_consumer import ShardConsumer
from visearch.api.app import ApiMetrics
from visearch.processes.shard_metrics import ShardCollector

# Every optional part switched on at once, so each template is checked.
ALL_OPTIONS: dict[str, Any] = {
    "strimzi": {"enabled": True},
    # Strimzi's TLS listener with SCRAM users: KafkaUser, cluster CA, password by secretKeyRef.
    "kafka": {"tls": {"enabled": True}, "sasl": {"enabled": True}},
    # The aggregator without a claim: its emptyDir branch gets checked too.
    "feedback": {"persistence": {"enabled": False}},
    "embedWorkers": {"gpu": {"enabled": True}, "autoscaling": {"enabled": True}},
    "api": {"ingress": {"enabled": True, "tlsSecret": "tls"}, "apiToken": {"existingSecret": "t"}},
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
    },
    "image": {"digest": "sha256:" + "a" * 64, "cudaDigest": "sha256:" + "b" * 64},
}
DEAD_LETTER_OFFSET = 'kafka_topic_partition_current_offset{topic="visearch.dead-letter"}'
INTERACTION_OFFSET = 'kafka_topic_partition_current_offset{topic="visearch.interactions"}'
FEEDBACK_LAG = 'visearch_feedback_watermark_lag_seconds{pod="vs-visearch-feedback-0"}'
CLICKS = "visearch_feedback_clicks_total"
IMPRESSIONS = "visearch_feedback_impressions_total"
# An external cluster with mutual TLS: the client certificate's volume and mounts.
MUTUAL_TLS = {"kafka": {"tls": {"enabled": True, "caSecret": "ca", "clientSecret": "client"}}}
CASES = {
    "default": ([], False),
    "production": ([], True),
    "all-options": ([ALL_OPTIONS], False),
    "mutual-tls": ([MUTUAL_TLS], False),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    values, production = CASES[request.param]
    code, out, err = render_text(*values, production=production)
    assert code == 0, err
    path = tmp_path_factory.mktemp("rendered") / f"{request.param}.yaml"
    path.write_text(out)
    return path


@pytest.mark.parametrize("production", [False, True], ids=["default", "production"])
def test_helm_lint_strict(production: bool) -> None:
    args = [tool("python"), REPO_ROOT / "helm" / "render.py", "--lint"]
    if production:
        args += ["-f", PRODUCTION_VALUES]
    done = run(args)
    assert done.returncode == 0, done.stdout + done.stderr


def test_manifests_match_kubernetes_schemas(rendered: Path) -> None:
    done = run([tool("kubernetes-validate"), "--strict", "-k", "1.30.0", rendered])
    assert done.returncode == 0, done.stdout + done.stderr
    # Only the CRD-backed kinds (Prometheus operator, Strimzi) may lack a schema.
    for line in (done.stdout + done.stderr).splitlines():
        if "Couldn't find schema" in line:
            crds = "ServiceMonitor|PodMonitor|PrometheusRule|Kafka|KafkaNodePool|KafkaUser"
            assert re.search(rf"kind ({crds}) ", line), line


def test_checkov_finds_nothing_unjustified(rendered: Path) -> None:
    done = run(
        [
            tool("checkov"),
            "-f",
            rendered,
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--quiet",
        ],
        timeout=180,
    )
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed, [(c["check_id"], c["resource"]) for c in failed]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed > 300  # it really scanned the manifests
    for r in reports:
        for skipped in r.get("results", {}).get("skipped_checks", []):
            assert skipped["check_id"] in {"CKV_K8S_43", "CKV_K8S_35"}, skipped["check_id"]
            assert len(skipped.get("suppress_comment", "")) > 20  # a reason, not a bare id


def test_dockerfile_lints_clean() -> None:
    done = run([tool("hadolint"), "--failure-threshold", "info", REPO_ROOT / "Dockerfile"])
    assert done.returncode == 0, done.stdout + done.stderr
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M), "the runtime stage must not run as root"
    assert text.count("\nFROM ") >= 2, "multi-stage"


def _rule_groups(tmp_path: Path) -> Path:
    rule = find(render(production=True), "PrometheusRule")[0]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_alert_rules_are_valid_promql(tmp_path: Path) -> None:
    done = run([tool("promtool"), "check", "rules", _rule_groups(tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout, done.stdout


def exposed_metrics() -> str:
    """What the code serves on /metrics (API, dead-letter monitor, feedback, a shard), with
    a sample in every family."""
    registry = CollectorRegistry()
    api = ApiMetrics(registry)
    api.searches.labels(outcome="ok").inc()
    api.search_seconds.observe(0.01)
    api.uploads.inc()
    monitor = DeadLetterMonitor(Settings())  # counts only; nothing connects until start()
    monitor.counts[("interactions", "late_event")] = 1
    registry.register(monitor)
    state = FeedbackState([0])
    base = {"user_id": "u", "search_id": "s", "query_image_id": "q", "model_version": "m"}
    now = time.time()
    events = [
        Interaction(
            event_id=f"e{i}",
            type=kind,
            position=0,
            displayed_image_id="d",
            timestamp=now,
            dwell_ms=dwell,
            **base,
        )
        for i, (kind, dwell) in enumerate([("impression", 0), ("click", 0), ("dwell", 4000)])
    ]
    state.process(0, [(i, e, now) for i, e in enumerate(events)])
    registry.register(FeedbackCollector(state))
    shard = IndexShard(4, "m", [0], recall_share=1.0)
    rng = np.random.default_rng(0)
    for n in range(12):  # a sampled search needs 10 results
        vector = vector_to_b64(rng.standard_normal(4))
        shard.apply(ImageEmbedded(image_id=f"i{n}", model_version="m", dim=4, vector_b64=vector,
                                  uploaded_at=now, embedded_at=now, source_partition=0,
                                  source_offset=n), 0, n)  # fmt: skip
    shard.search(rng.standard_normal(4).astype(np.float32), 10)
    assert shard.recall is not None
    shard.recall.drain()
    consumer = ShardConsumer(shard, Settings().kafka, "embeddings")  # not started: no I/O
    consumer.lag[0] = 3
    registry.register(ShardCollector(lambda: [(0, shard, consumer)]))
    return generate_latest(registry).decode()


def exposed_metric_names() -> set[str]:
    """Every sample name the code serves on /metrics."""
    families = text_string_to_metric_families(exposed_metrics())
    return {sample.name for family in families for sample in family.samples}


def test_the_metrics_exposition_passes_promtool() -> None:
    """`promtool check metrics`: names, units, help and types as Prometheus expects."""
    done = subprocess.run(
        [str(tool("promtool")), "check", "metrics"],
        input=exposed_metrics(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_and_dashboard_read_metrics_that_exist(tmp_path: Path) -> None:
    """Every visearch_* name in an alert or panel is served by the code (not a guess)."""
    rules = yaml.safe_load(_rule_groups(tmp_path).read_text())["groups"]
    exprs = [r["expr"] for g in rules for r in g["rules"]]
    script = REPO_ROOT / "helm" / "dashboards.py"
    exprs += json.loads(
        subprocess.run(
            [tool("python"), script, "--queries"], capture_output=True, text=True, check=True
        ).stdout
    )
    used = {m for e in exprs for m in re.findall(r"\b(visearch_[a-z0-9_]+)", e)}
    assert {"visearch_feedback_clicks_total", "visearch_dead_letters_total"} <= used
    missing = used - exposed_metric_names()
    assert not missing, f"no such metric: {sorted(missing)}"


def test_alerts_fire_on_their_conditions(tmp_path: Path) -> None:
    """promtool's alert unit tests, each with a case that must fire and one that must not."""
    rules = _rule_groups(tmp_path)
    annotations = {
        r["alert"]: r["annotations"]
        for g in yaml.safe_load(rules.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }

    def fires(alert: str) -> list[dict[str, Any]]:
        return [{"exp_labels": {"severity": "warning"}, "exp_annotations": annotations[alert]}]

    def shard_freshness(slow: bool) -> list[dict[str, str]]:
        """Cumulative bucket series of visearch_shard_freshness_seconds for two shards."""
        bounds = ["0.25", "1.0", "5.0", "30.0", "+Inf"]
        first = bounds.index("30.0" if slow else "0.25")
        return [
            {
                "series": f'visearch_shard_freshness_seconds_bucket{{shard="{k}", le="{le}"}}',
                "values": "0+100x30" if i >= first else "0x30",
            }
            for k in range(2)
            for i, le in enumerate(bounds)
        ]

    def dead_letters(pod: str) -> str:
        labels = f'pod="api-{pod}", instance="{pod}:8080", source="interactions", code="late_event"'
        return f"visearch_dead_letters_total{{{labels}}}"

    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": DEAD_LETTER_OFFSET,
                        "values": "0+120x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "VisearchDeadLettersHigh",
                        "exp_alerts": fires("VisearchDeadLettersHigh"),
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": DEAD_LETTER_OFFSET,
                        "values": "0+30x30",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "VisearchDeadLettersHigh", "exp_alerts": []},
                ],
            },
            {
                # Two API pods serve the same exact count (2/s each): the rate is 2/s, not 4.
                "interval": "1m",
                "input_series": [
                    {"series": dead_letters(pod), "values": "0+120x30"} for pod in ("a", "b")
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "VisearchDeadLettersHigh",
                        "exp_alerts": fires("VisearchDeadLettersHigh"),
                    },
                ],
            },
            {
                # 0.6/s in each of two pods is 0.6/s (a sum would say 1.2 and fire);
                # the exact count wins over kafka-exporter's offsets when both exist.
                "interval": "1m",
                "input_series": [
                    *({"series": dead_letters(pod), "values": "0+36x30"} for pod in ("a", "b")),
                    {"series": DEAD_LETTER_OFFSET, "values": "0+600x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "VisearchDeadLettersHigh", "exp_alerts": []},
                ],
            },
            {
                # The aggregator is stuck (lag grows a minute per minute) while
                # interactions keep arriving: fires once lag > 300 s for 10 min.
                "interval": "1m",
                "input_series": [
                    {"series": FEEDBACK_LAG, "values": "0+60x40"},
                    {"series": INTERACTION_OFFSET, "values": "0+600x40"},
                    {"series": "visearch_feedback_open_sessions", "values": "3x40"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "VisearchFeedbackLagging",
                        "exp_alerts": fires("VisearchFeedbackLagging"),
                    },
                    {"eval_time": "10m", "alertname": "VisearchFeedbackLagging", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "VisearchFeedbackDown", "exp_alerts": []},
                ],
            },
            {
                # Shards apply 100 vectors a minute, each 10-30 s after its upload: p99 > 5 s.
                "interval": "1m",
                "input_series": shard_freshness(slow=True),
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "VisearchFreshnessDegraded",
                        "exp_alerts": fires("VisearchFreshnessDegraded"),
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'visearch_shard_recall_at_10{shard="0"}', "values": "0.98x60"},
                    {"series": 'visearch_shard_recall_at_10{shard="1"}', "values": "0.80x60"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "45m",
                        "alertname": "VisearchRecallLow",
                        "exp_alerts": fires("VisearchRecallLow"),
                    },
                    {"eval_time": "20m", "alertname": "VisearchRecallLow", "exp_alerts": []},
                ],
            },
            {
                # The same rate, each within 250 ms: nothing fires.
                "interval": "1m",
                "input_series": shard_freshness(slow=False),
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "VisearchFreshnessDegraded",
                        "exp_alerts": [],
                    },
                ],
            },
            {
                # The same lag with no interactions arriving is a quiet night, not a fault.
                "interval": "1m",
                "input_series": [
                    {"series": FEEDBACK_LAG, "values": "0+60x40"},
                    {"series": INTERACTION_OFFSET, "values": "5000x40"},
                ],
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "VisearchFeedbackLagging", "exp_alerts": []},
                ],
            },
            {
                # No aggregator scraped at all.
                "interval": "1m",
                "input_series": [{"series": INTERACTION_OFFSET, "values": "0+600x40"}],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "VisearchFeedbackDown",
                        "exp_alerts": fires("VisearchFeedbackDown"),
                    },
                ],
            },
            {
                # 10 % CTR yesterday, 4 % today: below 0.7 x yesterday for over 30 min.
                "interval": "10m",
                "input_series": [
                    {"series": f'{IMPRESSIONS}{{position_bucket="0"}}', "values": "0+1000x300"},
                    {
                        "series": f'{CLICKS}{{position_bucket="0"}}',
                        "values": "0+100x144 14400+40x150",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1d12h",
                        "alertname": "VisearchCTRDrop",
                        "exp_alerts": fires("VisearchCTRDrop"),
                    },
                    {"eval_time": "23h", "alertname": "VisearchCTRDrop", "exp_alerts": []},
                ],
            },
        ],
    }
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(tests))
    done = run([tool("promtool"), "test", "rules", path])
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_generated_and_its_queries_parse(tmp_path: Path) -> None:
    committed = (CHART / "dashboards" / "visearch-ops.json").read_text()
    script = REPO_ROOT / "helm" / "dashboards.py"
    code = "import importlib.util as u, sys; s = u.spec_from_file_location('d', sys.argv[1]); "
    code += "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.build(), end='')"
    regenerated = subprocess.run(
        [tool("python"), "-c", code, script], capture_output=True, text=True, check=True
    ).stdout
    assert regenerated == committed, "run .venv-deploy/bin/python helm/dashboards.py"
    queries = json.loads(
        subprocess.run(
            [tool("python"), script, "--queries"], capture_output=True, text=True, check=True
        ).stdout
    )
    board = json.loads(committed)
    assert [t["expr"] for p in board["panels"] for t in p.get("targets", [])] == queries
    assert [p["title"] for p in board["panels"] if p["type"] == "row"] == [
        "Search and ingest",
        "Feedback: CTR and time spent",
        "Failures",
    ]
    # promtool parses PromQL when checking rules: one recording rule per query.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = run([tool("promtool"), "check", "rules", path])
    assert done.returncode == 0, done.stdout + done.stderr
