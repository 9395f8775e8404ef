"""Fetching an upload's bytes from an ``http(s)://`` URI, guarded against SSRF.

Upload events come from other systems; a URI in one must not let its author
make the embedding worker read the cloud metadata service, an admin port on
loopback or anything else inside the network. So:

- the host is resolved once, and every address it resolves to must be a
  global unicast address (loopback, private, link-local, CGNAT, multicast,
  reserved and unspecified ranges are refused, IPv4-mapped IPv6 unwrapped)
  unless ``allow_private`` is set;
- the connection goes to the address that was checked, not to the name
  again (a DNS answer that changes between check and connect, "DNS
  rebinding", cannot redirect it); the ``Host`` header and TLS SNI and
  certificate check still use the name;
- redirects are not followed (the target would need the same checks and is
  rarely what a backend meant to publish); credentials in the URI are refused;
- one deadline covers resolve, connect, headers and body (a server trickling
  a byte a second cannot hold a worker), and the body is capped at
  ``max_bytes`` whatever ``Content-Length`` claims.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

CHUNK = 65536


class FetchError(ValueError):
    """A remote image cannot be fetched; ``code`` is machine-readable.

    Codes: ``unsupported_uri``, ``forbidden_address``, ``fetch_failed``,
    ``fetch_timeout``, ``too_many_bytes``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class RemoteFetch:
    """How ``http(s)://`` image URIs are fetched; ``resolve`` is the DNS lookup."""

    timeout_s: float = 5.0
    allow_private: bool = False
    resolve: Callable[[str, int], list[str]] = field(default=resolve_host, compare=False)


def address_allowed(address: str, allow_private: bool) -> bool:
    """Whether a connection to ``address`` may be made (see the module docstring)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_private:
        return not (ip.is_unspecified or ip.is_multicast)
    return ip.is_global and not ip.is_multicast


def fetch(url: str, max_bytes: int, policy: RemoteFetch) -> bytes:
    """The body of ``url`` (status 200 only), at most ``max_bytes``; raises :class:`FetchError`."""
    deadline = time.monotonic() + policy.timeout_s
    parts = urlsplit(url)
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
        addresses = policy.resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise FetchError("fetch_failed", f"cannot resolve {host!r}: {exc}") from exc
    if not addresses:
        raise FetchError("fetch_failed", f"{host!r} resolves to no address")
    refused = [a for a in addresses if not address_allowed(a, policy.allow_private)]
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
        return _read_capped(connection, response, max_bytes, deadline)
    except TimeoutError as exc:
        raise FetchError(
            "fetch_timeout", f"{host} did not deliver within {policy.timeout_s} s"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError("fetch_failed", f"{host}: {exc}") from exc
    finally:
        connection.close()


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
