"""Where an upload's bytes come from: inline base64, a ``file://`` or an ``http(s)://`` URI.

File URIs are confined to allowed roots (the image store by default):
an event that names ``file:///etc/shadow`` or ``file://<root>/../x`` is refused,
because upload events come from other systems and must not turn the embedding
worker into a file reader for the whole disk. Inside the image store an event
may only name its own image's file (``<store>/<image_id>.img``): otherwise an
event under a new id could make a private image's pixels searchable. HTTP URIs are fetched only when
a :class:`~streams.remote_fetch.RemoteFetch` policy is given, with the SSRF
guard, deadline and size cap described in :mod:`streams.remote_fetch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from streams.errors import CodedError
from streams.remote_fetch import FetchError, RemoteFetch, fetch
from streams.schemas import ImageUploaded, SchemaError, is_http_uri


class ImageSourceError(CodedError, ValueError):
    """The image bytes of an upload cannot be read; ``code`` is machine-readable.

    Codes: ``unsupported_uri``, ``forbidden_path``, ``missing_file``,
    ``too_many_bytes``, ``bad_inline``, and for http(s) URIs
    ``forbidden_address``, ``fetch_failed``, ``fetch_timeout``.
    """


def file_uri(path: Path) -> str:
    """The ``file://`` URI of an absolute path."""
    return path.resolve().as_uri()


def read_image_bytes(
    event: ImageUploaded,
    allowed_roots: Sequence[Path],
    max_bytes: int,
    *,
    max_inline_bytes: int | None = None,
    remote: RemoteFetch | None = None,
    store_root: Path | None = None,
) -> bytes:
    """The bytes of the uploaded image, within ``max_bytes``.

    ``store_root``: the image store, where a URI may only name
    ``<image_id>.img`` of the event's own id.

    Inline images are further limited to ``max_inline_bytes`` (a big image
    belongs in a store, not in the log); ``http(s)://`` URIs are refused
    unless ``remote`` says how to fetch them.
    """
    if event.image_b64:
        inline_limit = min(max_bytes, max_inline_bytes or max_bytes)
        if len(event.image_b64) > 4 * (inline_limit // 3 + 1):  # before decoding it
            raise ImageSourceError(
                "too_many_bytes", f"inline image exceeds the inline limit of {inline_limit} bytes"
            )
        try:
            data = event.image_bytes()
        except SchemaError as exc:
            raise ImageSourceError("bad_inline", exc.message) from exc
        if len(data) > inline_limit:
            raise ImageSourceError("too_many_bytes", f"inline image has {len(data)} bytes")
        return data
    if is_http_uri(event.uri) and remote is not None:
        try:
            return fetch(event.uri, max_bytes, remote)
        except FetchError as exc:
            raise ImageSourceError(exc.code, exc.message) from exc
    try:
        parsed = urlparse(event.uri)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise ImageSourceError("unsupported_uri", f"{event.uri[:80]!r}: {exc}") from exc
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        supported = "file:// and http(s)://" if remote is not None else "file://"
        raise ImageSourceError(
            "unsupported_uri", f"{event.uri[:80]!r}: only {supported} URIs are supported"
        )
    try:
        path = Path(unquote(parsed.path)).resolve()
    except (ValueError, OSError) as exc:  # e.g. an embedded NUL byte
        raise ImageSourceError("forbidden_path", f"unusable path in URI: {exc}") from exc
    roots = [root.resolve() for root in allowed_roots]
    if not any(path.is_relative_to(root) for root in roots):
        raise ImageSourceError("forbidden_path", f"{path} is outside the allowed image roots")
    if store_root is not None and path.is_relative_to(store_root.resolve()):
        own = (store_root / f"{event.image_id}.img").resolve()
        if path != own:
            raise ImageSourceError(
                "forbidden_path", "a URI in the image store may only name the event's own image"
            )
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageSourceError("too_many_bytes", f"{path} has {size} bytes")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageSourceError("missing_file", f"{path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ImageSourceError("missing_file", f"{path} is a directory") from exc
