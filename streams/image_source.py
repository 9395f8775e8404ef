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

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from streams.errors import CodedError
from streams.remote_fetch import FetchError, RemoteFetch, fetch
from streams.schemas import ImageUploaded, SchemaError, is_http_uri

# Where Linux shows what each open descriptor of this process names (absent elsewhere).
_PROC_FDS = Path("/proc/self/fd")
_PROC_FDS_SHOWN = _PROC_FDS.is_dir()


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
    return read_regular_file(path, max_bytes)


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at the resolved ``path``, within ``max_bytes``.

    Opened without blocking and checked on the open descriptor: a FIFO or a
    device under an image root would otherwise block a decode thread for
    good (reading a FIFO waits for a writer; the batch's deadline gives up on
    the upload but not the thread), and a file that grows after it was
    measured is read no further than the limit. On Linux the descriptor's own
    path must still be ``path``: a directory swapped for a symlink between the
    root check and the open cannot lead outside the roots.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError as exc:
        raise ImageSourceError("missing_file", f"{path} does not exist") from exc
    except PermissionError as exc:
        raise ImageSourceError("forbidden_path", f"{path} is not readable") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageSourceError("missing_file", f"{path} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ImageSourceError("missing_file", f"{path} is not a regular file")
        if _PROC_FDS_SHOWN and os.readlink(_PROC_FDS / str(fd)) != str(path):
            raise ImageSourceError("forbidden_path", f"{path} changed while it was opened")
        if info.st_size > max_bytes:
            raise ImageSourceError("too_many_bytes", f"{path} has {info.st_size} bytes")
        data = _read_at_most(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageSourceError("too_many_bytes", f"{path} has more than {max_bytes} bytes")
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd`` (fewer at its end)."""
    chunks = []
    while limit > 0:
        chunk = os.read(fd, min(limit, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)
