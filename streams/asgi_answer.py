"""A whole HTTP answer sent straight through ASGI, for code that answers before the
web framework does: the API's request guard and the shard's binary search path.

Errors have the framework's shape (``{"detail": {"code", "message"}}``), so a
client cannot tell which layer refused it. A 413 or 408 closes the connection
(the rest of the body is not read), and a 401 names the Bearer scheme.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
JSON = "application/json"


async def send_answer(send: Send, status: int, body: bytes, media_type: str = JSON) -> None:
    """``body`` as the whole answer, with its type and length."""
    headers = [(b"content-type", media_type.encode()), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status in (408, 413):
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    """An error answer with a machine-readable ``code``."""
    body = json.dumps({"detail": {"code": code, "message": message}}).encode()
    await send_answer(send, status, body)
