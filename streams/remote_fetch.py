"""Fetching an upload's bytes from an ``http(s)://`` URI, guarded against SSRF.

Upload events come from other systems; a URI in one must not let its author
make the embedding worker read the cloud metadata service, an admin port on
loopback or anything else inside the network. So:

- the host is resolved once, and every address it resolves to must be a
  global unicast address (loopback, private, link-local, CGNAT, multicast,
  reserved and unspecified ranges are refused; IPv6 forms that lead to an
  IPv4 address (mapped, NAT64, 6to4, Teredo, IPv4-compatible) are judged by
  that address too) unless ``allow_private`` is set, or the address lies in
  one of the ``allowed_networks`` (e.g. an image server on the internal
  network, without opening every private address);
- the connection goes to the address that was checked, not to the name
  again (a DNS answer that changes between check and connect, "DNS
  rebinding", cannot redirect it); the ``Host`` header and TLS SNI and
  certificate check still use the name;
- redirects are not followed (the target would need the same checks and is
  rarely what a backend meant to publish); credentials in the URI are refused;
- one deadline covers resolve, connect, headers and body, enforced by a
  watchdog that shuts the socket when it passes: socket timeouts alone restart
  with every byte, so a server answering its status line and headers a byte
  at a time held a worker 15.6 s past a 3 s deadline. The body is capped at
  ``max_bytes`` whatever ``Content-Length`` claims.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from streams.errors import CodedError

CHUNK = 65536
# getaddrinfo cannot be interrupted: lookups run here so the deadline still holds.
_RESOLVERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


class FetchError(CodedError, ValueError):
    """A remote image cannot be fetched; ``code`` is machine-readable.

    Codes: ``unsupported_uri``, ``forbidden_address``, ``fetch_failed``,
    ``fetch_timeout``, ``too_many_bytes``.
    """


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class RemoteFetch:
    """How ``http(s)://`` image URIs are fetched; ``resolve`` is the DNS lookup."""

    timeout_s: float = 5.0
    allow_private: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    resolve: Callable[[str, int], list[str]] = field(default=resolve_host, compare=False)


# IPv6 ranges that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052),
# IPv4-translated (RFC 2765) and the deprecated IPv4-compatible form (::a.b.c.d).
_IPV4_IN_LOW_BITS = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("::/96"),
)
# Local-use NAT64 (RFC 8215) may put the IPv4 address anywhere: refused outright.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to, for the forms that embed one.

    On a NAT64 network ``64:ff9b::7f00:1`` reaches 127.0.0.1, and 6to4,
    Teredo, IPv4-mapped, -translated and -compatible forms carry an IPv4
    destination too; each is judged by that destination.
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _LOCAL_NAT64:
        return ipaddress.IPv4Address("0.0.0.0")
    if int(ip) > 1 and any(ip in network for network in _IPV4_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(
    address: str,
    allow_private: bool,
    allowed_networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
) -> bool:
    """Whether a connection to ``address`` may be made (see the module docstring)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
        candidates = [inner] if ip.ipv4_mapped is not None else [ip, inner]
    if allow_private:
        return not any(c.is_unspecified or c.is_multicast for c in candidates)
    return all(
        (c.is_global and not c.is_multicast) or any(c in net for net in allowed_networks)
        for c in candidates
    )


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated networks (``10.1.2.0/24,fd00::/8``; a bare address is one host)."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def fetch(url: str, max_bytes: int, policy: RemoteFetch) -> bytes:
    """The body of ``url`` (status 200 only), at most ``max_bytes``; raises :class:`FetchError`."""
    deadline = time.monotonic() + policy.timeout_s
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise FetchError("unsupported_uri", f"{url[:80]!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("unsupported_uri", f"{url[:80]!r} is not an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise FetchError("unsupported_uri", "credentials in image URIs are not accepted")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchError("unsupported_uri", f"bad port in {url[:80]!r}") from exc
    try:
        addresses = _RESOLVERS.submit(policy.resolve, host, port).result(policy.timeout_s)
    except FutureTimeout as exc:
        raise FetchError(
            "fetch_timeout", f"{host!r} did not resolve within {policy.timeout_s} s"
        ) from exc
    except (OSError, UnicodeError) as exc:
        raise FetchError("fetch_failed", f"cannot resolve {host!r}: {exc}") from exc
    if not addresses:
        raise FetchError("fetch_failed", f"{host!r} resolves to no address")
    refused = [
        a
        for a in addresses
        if not address_allowed(a, policy.allow_private, policy.allowed_networks)
    ]
    if refused:
        raise FetchError(
            "forbidden_address",
            f"{host!r} resolves to {refused[0]}, a loopback, private, link-local or reserved "
            "address (set VISEARCH_IMAGE_FETCH_ALLOW_PRIVATE=true to allow)",
        )
    remaining = max(0.001, deadline - time.monotonic())
    connection = _pinned_connection(parts.scheme, host, port, addresses[0], remaining)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    watchdog = _Watchdog(connection, remaining)
    try:
        connection.request("GET", target, headers={"User-Agent": "visearch", "Accept": "image/*"})
        _set_timeout(connection, deadline)
        response = connection.getresponse()
        if response.status != 200:
            raise FetchError(
                "fetch_failed", f"{host} answered HTTP {response.status} {response.reason}"
            )
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError("too_many_bytes", f"{host} announces {declared} bytes")
        body = _read_capped(connection, response, max_bytes, deadline)
        if watchdog.fired:  # the socket was shut mid-body: what was read is cut short
            raise TimeoutError("deadline passed")
        return body
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        if watchdog.fired or isinstance(exc, TimeoutError):
            raise FetchError(
                "fetch_timeout", f"{host} did not deliver within {policy.timeout_s} s"
            ) from exc
        raise FetchError("fetch_failed", f"{host}: {exc}") from exc
    finally:
        watchdog.cancel()
        connection.close()


class _Watchdog:
    """Shuts a connection's socket when the fetch's deadline passes.

    Blocking reads then return at once, wherever they are (status line,
    headers, body), which a per-read socket timeout cannot guarantee.
    """

    def __init__(self, connection: http.client.HTTPConnection, after_s: float) -> None:
        self.connection = connection
        self.fired = False
        self._timer = threading.Timer(after_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _read_capped(
    connection: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    max_bytes: int,
    deadline: float,
) -> bytes:
    body = bytearray()
    while True:
        _set_timeout(connection, deadline)
        chunk = response.read1(CHUNK)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise FetchError("too_many_bytes", f"the body exceeds {max_bytes} bytes")


def _set_timeout(connection: http.client.HTTPConnection, deadline: float) -> None:
    """Shrink the socket timeout to what is left of the overall deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    if connection.sock is not None:
        connection.sock.settimeout(remaining)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an already checked address; ``Host`` stays the name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an already checked address; SNI and the certificate check use the name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
            sock, server_hostname=self.host
        )


def _pinned_connection(
    scheme: str, host: str, port: int, address: str, timeout: float
) -> http.client.HTTPConnection:
    if scheme == "https":
        return _PinnedHTTPSConnection(host, port, address, timeout)
    return _PinnedHTTPConnection(host, port, address, timeout)
