"""What every HTTP request meets before the API's own code: the work an anonymous
client can cause is bounded before anything is parsed.

- **Token first.** A write route (one that depends on the API token) is
  refused with 401 before its body is read: a 512 MB multipart upload without
  a token used to be spooled to disk in full before the 401.
- **Byte caps on the raw body.** Each route has a cap (uploads: the upload
  limit plus multipart overhead; interactions: the batch limit; everything
  else 64 KiB). A declared ``Content-Length`` over it gets 413 at once; a
  chunked body is counted as it arrives and cut off at the cap.
- **Deadlines.** The request line and headers must arrive within
  ``http_header_timeout_s`` (:func:`guarded_protocol`, at the connection) and
  the body within ``http_body_timeout_s`` (408), so half-sent requests cannot
  hold connections for ever.
- **Headers on every answer**: no ``server`` banner, ``nosniff``, no framing,
  no referrer, and a content security policy for the page.

Token checks compare bytes in constant time and accept the scheme in any
case (RFC 9110 makes it case-insensitive); a header that is not ASCII is
simply wrong, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from uvicorn.protocols.http.h11_impl import H11Protocol

from streams.asgi_answer import send_error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_BODY_BYTES = 64 * 1024
# Room for the multipart framing and form fields around an uploaded image.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
NONE = "'none'"
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every endpoint route, including those of included routers.

    FastAPI 0.165 keeps an included router as one ``_IncludedRouter`` entry
    of ``app.routes`` (earlier versions copied its routes in); both are walked.
    """
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from api_routes(router.routes)


def bearer_token_matches(header: str | bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer token.

    Bytes are compared (``hmac.compare_digest`` refuses non-ASCII str), the
    scheme case-insensitively.
    """
    if header is None:
        return False
    raw = header if isinstance(header, bytes) else header.encode("utf-8", "surrogateescape")
    scheme, _, credentials = raw.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(credentials.strip(), token.encode())


@dataclass(frozen=True)
class RoutePolicy:
    """What the guard enforces for one route."""

    max_body_bytes: int = DEFAULT_BODY_BYTES
    needs_token: bool = False


class RequestGuard:
    """ASGI middleware enforcing :class:`RoutePolicy` per route (see the module docstring).

    ``policies``: each route with its policy, matched as the router matches
    (path and method); a request no route matches gets the default policy.
    The API derives ``needs_token`` from the route's dependency on
    ``require_token``, so the guard and the endpoints cannot disagree.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        policies: Sequence[tuple[BaseRoute, RoutePolicy]],
        body_timeout_s: float,
        content_security_policy: str = "",
    ) -> None:
        self.app = app
        self.token = token
        self.policies = list(policies)
        self.body_timeout_s = body_timeout_s
        self.headers = list(SECURITY_HEADERS)
        if content_security_policy:
            self.headers.append((b"content-security-policy", content_security_policy.encode()))

    def policy_for(self, scope: Scope) -> RoutePolicy:
        for route, policy in self.policies:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return policy
        return RoutePolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(send)
        policy = self.policy_for(scope)
        headers = dict(scope.get("headers") or [])
        if (
            policy.needs_token
            and self.token
            and not bearer_token_matches(headers.get(b"authorization"), self.token)
        ):
            await send_error(send, 401, "unauthorized", "a valid bearer token is required")
            return
        declared = headers.get(b"content-length")
        if declared is not None and (
            not declared.isdigit() or int(declared) > policy.max_body_bytes
        ):
            await send_error(send, 413, "too_large", too_large(policy.max_body_bytes))
            return
        state = _Exchange(send)
        body = _GuardedBody(receive, policy.max_body_bytes, self.body_timeout_s, state)
        await self.app(scope, body.receive, state.send_from_app)

    def _with_headers(self, send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        return send_with_headers


class _Exchange:
    """One request's response channel: the guard can answer first, the app is then muted.

    The guard cannot raise its refusal through the app (FastAPI turns any
    error while reading a body into its own 400), so it answers itself and
    tells the app the client left.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.refused = False

    async def send_from_app(self, message: Message) -> None:
        if self.refused:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)

    async def refuse(self, status: int, code: str, reason: str) -> None:
        if not self.started and not self.refused:
            self.refused = True
            await send_error(self._send, status, code, reason)


class _GuardedBody:
    """``receive`` that stops a body at its cap and its deadline."""

    def __init__(self, receive: Receive, limit: int, timeout_s: float, exchange: _Exchange) -> None:
        self._receive = receive
        self.limit = limit
        self.timeout_s = timeout_s
        self.exchange = exchange
        self.received = 0
        self._deadline: float | None = None

    async def receive(self) -> Message:
        if self.exchange.refused:
            return {"type": "http.disconnect"}
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self.timeout_s
        try:
            message = await asyncio.wait_for(
                self._receive(), max(0.0, self._deadline - loop.time())
            )
        except TimeoutError:
            reason = f"the request body did not arrive within {self.timeout_s:g} s"
            await self.exchange.refuse(408, "request_timeout", reason)
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                await self.exchange.refuse(413, "too_large", too_large(self.limit))
                return {"type": "http.disconnect"}
        return message


def too_large(limit: int) -> str:
    """The message of a 413 for a body over ``limit`` bytes."""
    return f"the request body is limited to {limit} bytes here"


# Request line and headers beyond this many bytes close the connection (h11's
# own limit; llhttp, the C parser, has none).
MAX_HEADER_BYTES = 16 * 1024


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's fastest HTTP/1.1 protocol here: the C parser (httptools) when it is
    installed, h11 otherwise. Measured on a shard search request (2 cores):
    1.05 against 1.35 ms of CPU for both ends, and the scatter sends one per
    shard per query."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is missing: pure-Python h11
        return H11Protocol
    return HttpToolsProtocol


def guarded_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a deadline and a size cap for each request's line
    and headers.

    uvicorn has no deadline: its keep-alive timer is cancelled by any byte, so
    a client sending a header byte now and then (or never finishing) held its
    connection indefinitely (200 such connections for 60 s in the probe).
    """
    base: Any = http_protocol()

    class HeaderDeadlineProtocol(base):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _header_tail = b""

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._waiting_for_headers():
                # Count the bytes up to the blank line that ends the headers (the
                # same chunk may carry the start of the body).
                seen = self._header_tail + data
                end = seen.find(b"\r\n\r\n")
                self._header_bytes += len(data) if end < 0 else end
                self._header_tail = seen[-3:]
                if self._header_bytes > MAX_HEADER_BYTES:
                    self.transport.close()
                    return
            super().data_received(data)
            if not self._waiting_for_headers():
                self._disarm()  # headers complete: the body has its own deadline

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _waiting_for_headers(self) -> bool:
            return bool(self.cycle is None or self.cycle.response_complete)

        def _arm(self) -> None:
            self._disarm()
            self._header_bytes, self._header_tail = 0, b""
            self._header_timer = self.loop.call_later(header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol


def page_security_policy(html: str) -> str:
    """A content security policy for ``html`` that allows its own inline script and style
    (by hash) and nothing else from anywhere but this origin."""
    hashes = {
        kind: " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
            for body in re.findall(rf"<{kind}>(.*?)</{kind}>", html, re.S)
        )
        for kind in ("script", "style")
    }
    return (
        f"default-src 'none'; script-src {hashes['script'] or NONE}; "
        f"style-src {hashes['style'] or NONE}; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
