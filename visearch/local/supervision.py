"""Restarting the child processes a local stack starts, with backoff, and giving up loudly.

``visearch run`` starts the embedding worker as a child process. A child that
dies (SIGKILL from the OOM killer, a crash) used to stay dead: nothing was
logged, ``/readyz`` said ``worker`` not ready, and uploads waited for ever.
:class:`SupervisedChild` is polled by the stack's supervisor thread: it logs
each death with its exit status or signal, restarts the child after a capped
exponential backoff, counts restarts by reason (exported as
``visearch_child_restarts_total``), and gives up (``GiveUp``) after
``max_fast_failures`` deaths in a row that each came within ``stable_s`` of
the start: a child that cannot stay up is a bug or a broken machine, and
restarting it for ever would hide that.

A worker that exits for a new log epoch of the embedded broker
(``EXIT_NEW_EPOCH``) is a planned restart: at once, not counted as a failure.

Nothing acknowledged is lost by a restart: the worker commits an upload's
offset only after its embedding is published, so a new worker in the same
consumer group starts from the last committed offset and embeds again what
was in flight (embeddings are idempotent by image id).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class GiveUp(RuntimeError):  # noqa: N818 (an outcome, not an error of the caller)
    """A child kept dying right after its start; the stack stops trying."""


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts and when to give up."""

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    stable_s: float = 30.0  # up this long: the next death starts the backoff afresh
    max_fast_failures: int = 5

    def backoff_s(self, fast_failures: int) -> float:
        """Wait before the restart that follows ``fast_failures`` quick deaths (>= 1)."""
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** (fast_failures - 1))


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal SIGKILL`` (Popen reports a signal as -signum)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class SupervisedChild:
    """One child process, restarted by :meth:`check` whenever it has died."""

    def __init__(
        self,
        name: str,
        spawn: Callable[[], subprocess.Popen[bytes]],
        policy: RestartPolicy = RestartPolicy(),
        planned_exit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.spawn = spawn
        self.policy = policy
        self.planned_exit = planned_exit
        self.clock = clock
        self.restarts: Counter[str] = Counter()
        self.fast_failures = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._restart_at: float | None = None
        self._lock = threading.Lock()

    def start(self) -> subprocess.Popen[bytes]:
        self.process = self.spawn()
        self.started_at = self.clock()
        log.info("%s started, pid %d", self.name, self.process.pid)
        return self.process

    def check(self) -> None:
        """Restart the child if it has died and its backoff has passed; raise GiveUp."""
        with self._lock:
            now = self.clock()
            if self._restart_at is not None:
                if now >= self._restart_at:
                    self._restart_at = None
                    self.start()
                return
            if self.process is None or (code := self.process.poll()) is None:
                return
            if code == self.planned_exit:
                log.warning("%s exited for a new log epoch: starting a fresh one", self.name)
                self.restarts["new_epoch"] += 1
                self.start()
                return
            uptime = now - self.started_at
            self.fast_failures = self.fast_failures + 1 if uptime < self.policy.stable_s else 1
            self.restarts["died"] += 1
            if self.fast_failures > self.policy.max_fast_failures:
                raise GiveUp(
                    f"{self.name} died {self.fast_failures} times in a row within "
                    f"{self.policy.stable_s:g} s of its start (last: {describe_exit(code)})"
                )
            wait = self.policy.backoff_s(self.fast_failures)
            log.error(
                "%s (pid %d) died with %s after %.1f s; restarting it in %.1f s (restart %d)",
                self.name,
                self.process.pid,
                describe_exit(code),
                uptime,
                wait,
                sum(self.restarts.values()),
            )
            self._restart_at = now + wait

    def restarting(self) -> bool:
        """Dead and waiting for its backoff to pass (not a failure yet)."""
        return self._restart_at is not None


RestartCounts = Callable[[], list[tuple[str, str, int]]]  # (child, reason, restarts)


def child_restart_counts(child: SupervisedChild) -> list[tuple[str, str, int]]:
    return [(child.name, reason, child.restarts[reason]) for reason in ("died", "new_epoch")]


class RestartCollector(Collector):
    """``visearch_child_restarts_total{child, reason}``, read at scrape time."""

    def __init__(self, counts: RestartCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "visearch_child_restarts",
            "Child processes restarted by the local stack's supervisor",
            labels=["child", "reason"],
        )
        for child, reason, count in self.counts():
            family.add_metric([child, reason], count)
        yield family
