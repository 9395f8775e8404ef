"""Render or lint the chart with Helm's own Go SDK (helm-python-sdk), no helm binary.

Runs in the deploy-tools venv (``make deploy-tools``), not the project venv:
``.venv-deploy/bin/python helm/render.py [--lint] [-f values.yaml] [--set-json JSON]``.
Prints the manifests as one multi-document YAML stream (= ``helm template``)
or, with ``--lint``, the lint messages (= ``helm lint --strict``), exiting 1
on any error. A render error (schema violation, ``fail``) exits 2 with Helm's
message on stderr, which the tests read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml

CHART = Path(__file__).resolve().parent / "visearch"


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into ``base`` the way Helm merges ``-f`` files."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument("-f", "--values", type=Path, action="append", default=[])
    parser.add_argument("--set-json", action="append", default=[], help="a JSON object")
    parser.add_argument("--name", default="vs")
    parser.add_argument("--namespace", default="visearch")
    parser.add_argument("--lint", action="store_true")
    args = parser.parse_args()

    values: dict[str, Any] = {}
    for path in args.values:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    for text in args.set_json:
        values = merge(values, json.loads(text))

    if args.lint:
        result = helm_python.lint(args.chart, values=values, strict=True, namespace=args.namespace)
        print(json.dumps(result, indent=2, default=str))
        messages = result.get("messages") or []
        errors = result.get("errors") or []
        # Helm severities: 1 info, 2 warning, 3 error; --strict treats warnings as errors.
        failed = bool(errors) or any(int(m.get("severity", 0)) >= 2 for m in messages)
        return 1 if failed else 0

    chart = helm_python.Chart.load(args.chart)
    try:
        rendered = chart.render(
            values=values, name=args.name, namespace=args.namespace, is_install=True
        )
    except helm_python.HelmError as exc:
        print(f"render failed: {exc}", file=sys.stderr)
        return 2
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith("NOTES.txt") or not text:
            continue
        print(f"---\n# Source: {path}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
