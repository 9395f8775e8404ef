"""Atomic file replacement: a crash or a full disk never leaves a half-written file.

Write to a temporary file in the same directory, fsync it, rename it over the
target (atomic on POSIX) and fsync the directory so the rename itself is
durable. On any error the temporary file is removed and the previous file
stays as it was.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path


def atomic_write_chunks(target: Path, chunks: Iterable[bytes], single_writer: bool = False) -> Path:
    """Replace ``target`` with the concatenation of ``chunks``, atomically.

    The temporary file gets a unique name, so concurrent writers of one target
    never write into each other's file; ``single_writer`` callers (one thread
    owns the target) get the fixed name ``.<target>.tmp`` instead, which an
    operator can recognise and the fault tests can intercept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "tmp" if single_writer else f"{uuid.uuid4().hex}.tmp"
    tmp = target.with_name(f".{target.name}.{suffix}")
    try:
        with tmp.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
    return target


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
