"""One small JSON-over-HTTP call with the standard library, for visearch's own clients.

Remote shards, the feedback summary, the model CLI and the traffic
simulator all speak JSON to a visearch process; none needs more than this,
and none should pull an HTTP client library into the runtime. Callers keep
their own error handling (what a failure means differs per caller).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def request_json(
    url: str,
    method: str = "GET",
    *,
    json_body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Send ``json_body`` (encoded here) or raw ``data``; return the JSON object answered.

    Raises urllib's ``URLError``/``HTTPError`` (an ``OSError``), ``TimeoutError``,
    or ``ValueError`` when the answer is not a JSON object.
    """
    headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer = json.loads(response.read())
    if not isinstance(answer, dict):
        raise ValueError(f"{url} answered {type(answer).__name__}, not a JSON object")
    return answer
