"""``visearch model deploy|status|switch|retire|backfill``.

deploy, status, switch and retire ask the running API (``--url``, default
``VISEARCH_HTTP_HOST:PORT``, with ``VISEARCH_API_TOKEN`` when set), because
the API holds the indexes that decide whether a switch is allowed; backfill
runs here, next to the image store.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streams.errors import VisearchError
from streams.http_json import request_json
from streams.settings import Settings


class ModelCommandError(VisearchError, RuntimeError):
    """The API refused the request; the message is its reason."""


def call_api(
    settings: Settings, url: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    base = (url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    try:
        return request_json(base + path, method, json_body=body, headers=headers, timeout_s=120)
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", {})
        raise ModelCommandError(
            f"{exc.code} {detail.get('code')}: {detail.get('message')}"
        ) from exc
    except urllib.error.URLError as exc:
        raise ModelCommandError(f"the API at {base} is not reachable: {exc.reason}") from exc


def run_model_command(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """One ``visearch model`` subcommand; returns what to print as JSON."""
    if args.model_command == "backfill":
        from visearch.models.backfill import backfill

        report = backfill(settings, args.version, args.rate, restart=args.restart)
        return asdict(report)
    if args.model_command == "deploy":
        body = {"model_dir": str(Path(args.path).resolve())}
        return call_api(settings, args.url, "POST", "/v1/models", body)
    if args.model_command == "switch":
        return call_api(settings, args.url, "POST", f"/v1/models/{args.version}/switch")
    if args.model_command == "retire":
        return call_api(settings, args.url, "DELETE", f"/v1/models/{args.version}")
    return call_api(settings, args.url, "GET", "/v1/models")


def add_model_parser(sub: Any) -> None:
    """The ``model`` command and its subcommands."""
    model = sub.add_parser("model", help="model versions: deploy, backfill, switch, retire")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    deploy = model_sub.add_parser("deploy", help="register a model dir (index builds beside)")
    deploy.add_argument("path", type=Path, help="model directory, readable by every process")
    model_sub.add_parser("status", help="versions, states, index sizes, missing images")
    switch = model_sub.add_parser("switch", help="move searches to a complete candidate")
    switch.add_argument("version")
    retire = model_sub.add_parser("retire", help="drop a candidate version")
    retire.add_argument("version")
    backfill = model_sub.add_parser("backfill", help="re-embed the image store with a candidate")
    backfill.add_argument("version")
    backfill.add_argument("--rate", type=float, default=20.0, help="images per second at most")
    backfill.add_argument("--restart", action="store_true", help="ignore saved progress")
    for command in (deploy, model_sub.choices["status"], switch, retire):
        command.add_argument("--url", help="API base URL (default: VISEARCH_HTTP_HOST/PORT)")
    model.set_defaults(func=_cmd_model)


def _cmd_model(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(run_model_command(settings, args)))
    return 0
