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
from pathlib import Path
from typing import Any

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

# Every optional part switched on at once, so each template is checked.
ALL_OPTIONS: dict[str, Any] = {
    "strimzi": {"enabled": True},
    "feedbackWorkers": {"enabled": True},
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
CASES = {
    "default": ([], False),
    "production": ([], True),
    "all-options": ([ALL_OPTIONS], False),
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
            assert re.search(r"kind (ServiceMonitor|PrometheusRule|Kafka|KafkaNodePool) ", line), (
                line
            )


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
    assert "SUCCESS: 8 rules found" in done.stdout, done.stdout


def test_alerts_fire_on_their_conditions(tmp_path: Path) -> None:
    """promtool's alert unit tests: dead letters at 2/s fire, 0.5/s do not; a CTR halving fires."""
    rules = _rule_groups(tmp_path)
    annotations = {
        r["alert"]: r["annotations"]
        for g in yaml.safe_load(rules.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }

    def fires(alert: str) -> list[dict[str, Any]]:
        return [{"exp_labels": {"severity": "warning"}, "exp_annotations": annotations[alert]}]

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
                # 10 % CTR yesterday, 4 % today: below 0.7 x yesterday for over 30 min.
                "interval": "10m",
                "input_series": [
                    {"series": "visearch_impressions_total", "values": "0+1000x300"},
                    {"series": "visearch_clicks_total", "values": "0+100x144 14400+40x150"},
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
    assert [t["expr"] for p in board["panels"] for t in p["targets"]] == queries
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
