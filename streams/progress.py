"""The embedding worker's progress, readable by the process that runs it.

A worker that is alive but makes no progress (a batch that never ends, a
process stopped or starved) used to look ready: ``/readyz`` only asked
whether its process existed. The worker therefore writes a small beacon
file every ``interval_s`` from a thread of its own: when it was written and
since when the current batch has been running (``null`` between batches).
:func:`progress_check` turns it into a readiness check: stale (the process
is frozen) or busy for too long (a batch is stuck) is not ready.

One small atomic write every two seconds, also when idle: nothing that
costs measurable CPU, and no broker round trip.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ProgressBeacon:
    """Marks batches busy and writes the beacon file from a daemon thread."""

    def __init__(self, path: Path, interval_s: float = 2.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.busy_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around one batch: from when it starts to when its results are published."""
        self.busy_since = time.time()
        try:
            yield
        finally:
            self.busy_since = None

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        beacon = {"written_at": time.time(), "busy_since": self.busy_since}
        # Replaced atomically but not fsynced: a beacon lost in a crash is just stale.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_bytes(json.dumps(beacon).encode())
        tmp.replace(self.path)

    def start(self) -> ProgressBeacon:
        def run() -> None:
            while not self._stop.is_set():
                self.write()
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=run, name="progress-beacon", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def progress_check(path: Path, max_busy_s: float, max_age_s: float) -> dict[str, Any]:
    """A ``/readyz`` check from the beacon at ``path``: ``{"ok": ..., details}``."""
    try:
        beacon = json.loads(path.read_bytes())
        written_at = float(beacon["written_at"])
        busy_since = beacon["busy_since"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"ok": False, "reason": "no progress beacon from the worker yet"}
    now = time.time()
    if now - written_at > max_age_s:
        return {"ok": False, "reason": f"the worker has not reported for {now - written_at:.0f} s"}
    if busy_since is not None and now - float(busy_since) > max_busy_s:
        return {
            "ok": False,
            "reason": f"an embedding batch has been running for {now - float(busy_since):.0f} s",
        }
    return {"ok": True}
