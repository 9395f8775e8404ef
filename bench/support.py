"""What several benchmarks share: a `visearch run` in a process of its own, `visearch
shard` processes, the CPU time of a process tree, percentiles.

A benchmark that measures the service as a user runs it starts ``visearch run``
(broker, worker and API, the processes ``make run`` starts) as a subprocess:
its CPU and memory are then its own, not the load generator's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np

from streams.broker import free_port
from streams.publisher import EventPublisher
from streams.settings import Settings
from visearch.local.stack import isolated_settings, settings_env

T = TypeVar("T")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def middle(values: Sequence[T], key: Callable[[T], float]) -> T:
    """The middle of ``values`` ordered by ``key`` (the upper one of an even count):
    the round a benchmark reports out of several of the same set, by its p95."""
    return sorted(values, key=key)[len(values) // 2]


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant, from /proc."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        try:
            found += [p for c in children.read_text().split() for p in process_tree(int(c))]
        except OSError:
            continue
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first); ``None``
    once the process has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it has gone)."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (``T``: stopped); ``X`` once it has gone."""
    fields = _stat_fields(pid)
    return "X" if fields is None else fields[0]


def command_of(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(w.decode(errors="replace") for w in words if w)
    if "tansu" in text:
        return "broker"
    if "visearch worker" in text:
        return "worker"
    return "api" if "visearch run" in text else text[:40]


@dataclass
class RunningStack:
    """A ``visearch run`` subprocess and what a benchmark needs to reach it."""

    settings: Settings
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path
    http: httpx.Client
    publisher: EventPublisher
    auth: dict[str, str] = field(default_factory=dict)

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of the API, worker and broker processes."""
        totals: dict[str, float] = {}
        for pid in process_tree(self.process.pid):
            name = command_of(pid)
            totals[name] = totals.get(name, 0.0) + cpu_seconds(pid)
        return totals


@contextmanager
def running_stack(
    base: Settings, data_dir: Path, purpose: str, **overrides: object
) -> Iterator[RunningStack]:
    """``visearch run --no-demo`` on private settings; yields once ``/readyz`` answers 200."""
    settings = isolated_settings(base, data_dir, purpose).with_overrides(
        http_port=free_port(), **overrides
    )
    log = data_dir / "stack.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "visearch", "run", "--no-demo"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://{settings.http_host}:{settings.http_port}"
    http = httpx.Client(base_url=base_url, timeout=120)
    publisher: EventPublisher | None = None
    auth = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the stack did not become ready; see {log}")
            time.sleep(0.5)
        # Only now: the stack starts its embedded broker after choosing and checking the
        # model (seconds on a first start), and a producer gives up bootstrapping sooner.
        publisher = EventPublisher(settings)
        yield RunningStack(settings, base_url, process, log, http, publisher, auth)
    finally:
        if publisher is not None:
            publisher.stop()
        http.close()
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


class ShardProcess:
    """One ``visearch shard`` process: shard ``shard_id``, copy ``copy``, its own data
    directory (copies of a shard never share snapshots) and a free port."""

    def __init__(
        self, settings: Settings, shard_id: int, copy: int, root: Path, timeout_s: float = 120
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings.with_overrides(
            data_dir=root / f"shard-{shard_id}-copy-{copy}",
            shard_http_port=self.port,
            shard_id=shard_id,
            snapshot_interval_s=0.5,
        )
        self.log = root / f"shard-{shard_id}-copy-{copy}.log"
        self.timeout_s = timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ShardProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "visearch", "shard"],
                env=settings_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def cpu_seconds(self) -> float:
        """CPU seconds so far of the process and its children (0 when not running)."""
        if self.process is None:
            return 0.0
        return sum(cpu_seconds(pid) for pid in process_tree(self.process.pid))

    def status(self) -> dict[str, object] | None:
        """``/v1/shard/status``, or ``None`` while it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/shard/status", timeout=2) as response:
                return dict(json.loads(response.read()))
        except OSError:
            return None

    def wait_up(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while self.status() is None:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"shard process died; see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"shard process did not start; see {self.log}")
            time.sleep(0.1)

    def images(self) -> int:
        status = self.status()
        return -1 if status is None else int(str(status["images"]))

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@contextmanager
def shard_processes(copies: list[list[ShardProcess]]) -> Iterator[list[list[ShardProcess]]]:
    """Start every copy of every shard, wait until all answer; kill them all at the end."""
    try:
        for shard in copies:
            for copy in shard:
                copy.start()
        for shard in copies:
            for copy in shard:
                copy.wait_up()
        yield copies
    finally:
        for shard in copies:
            for copy in shard:
                copy.kill()


def wait_shard_images(copies: list[list[ShardProcess]], total: int, timeout_s: float = 120) -> None:
    """Until every copy of each shard holds the same images and the shards ``total``."""
    deadline = time.monotonic() + timeout_s
    counts: list[list[int]] = []
    while time.monotonic() < deadline:
        counts = [[copy.images() for copy in shard] for shard in copies]
        if all(len(set(row)) == 1 for row in counts) and sum(row[0] for row in counts) == total:
            return
        time.sleep(0.1)
    raise TimeoutError(f"shard copies hold {counts} images, expected {total} in all")
