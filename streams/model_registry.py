"""The model registry: which encoder versions exist, which one serves searches.

The registry is a fold over the models topic (one partition, a handful of
ModelChanged records), so every process that reads the topic from the start
(API, shards, embedding workers) agrees on it without a database. Before any
switch, the version in ``VISEARCH_MODEL_DIR`` serves.

A rollout: ``deploy`` v2 (workers embed new uploads with v1 and v2, the API
builds v2's index beside v1's, ``visearch model backfill`` re-embeds the
catalogue with v2) → ``switch`` to v2 once its index holds every catalogued
image (searches move in one step; v1 is retired and dropped everywhere).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoders.model_dir import read_metadata
from streams.errors import VisearchError
from streams.log_follower import LogFollower
from streams.schemas import ModelChanged, SchemaError, decode
from streams.settings import Settings

log = logging.getLogger(__name__)


class RegistryError(VisearchError, ValueError):
    """A model change that the registry's current state does not allow."""


@dataclass
class ModelVersion:
    version: str
    model_dir: str
    state: str  # candidate | serving | retired


class ModelRegistry:
    """Encoder versions and their states; apply events in log order."""

    def __init__(self, serving_version: str, serving_dir: str) -> None:
        self.versions = {serving_version: ModelVersion(serving_version, serving_dir, "serving")}
        self.serving = serving_version

    @classmethod
    def serving_from(cls, model_dir: Path) -> ModelRegistry:
        """A registry whose serving version, until a switch, is the model in ``model_dir``."""
        return cls(read_metadata(model_dir).version, str(model_dir))

    def check(self, event: ModelChanged) -> None:
        """Raise :class:`RegistryError` if ``event`` cannot apply now (check before publishing)."""
        known = self.versions.get(event.version)
        if event.action == "switch" and (known is None or known.state == "retired"):
            raise RegistryError(f"model {event.version} is not deployed")
        if event.action == "retire" and event.version == self.serving:
            raise RegistryError(f"model {event.version} serves searches: switch away first")

    def apply(self, event: ModelChanged) -> bool:
        """Apply one event; returns whether anything changed (invalid ones are logged)."""
        try:
            self.check(event)
        except RegistryError as exc:
            log.warning("ignoring model event %s %s: %s", event.action, event.version, exc)
            return False
        known = self.versions.get(event.version)
        if event.action == "deploy":
            if known is not None and known.state != "retired":
                return False
            self.versions[event.version] = ModelVersion(event.version, event.model_dir, "candidate")
        elif event.action == "switch":
            if event.version == self.serving:
                return False
            self.versions[self.serving].state = "retired"
            self.versions[event.version].state = "serving"
            self.serving = event.version
        else:
            if known is None or known.state == "retired":
                return False
            known.state = "retired"
        return True

    def active(self) -> list[ModelVersion]:
        """The serving version first, then candidates: what workers embed with."""
        serving = self.versions[self.serving]
        return [serving] + [v for v in self.versions.values() if v.state == "candidate"]

    def get(self, version: str) -> ModelVersion | None:
        return self.versions.get(version)


class ModelWatcher(LogFollower):
    """Reads the models topic from the start and calls ``on_event`` for each record.

    Every process needs every event, so no consumer group. ``caught_up`` is
    set once the topic has been read to its end, so a process can start with
    the registry's current state.

    Each event is delivered once, by identity (action, version, directory,
    time): after a broker restart the new log epoch is read from its start
    and holds the registry journal republished (:mod:`streams.model_journal`),
    and a fold of deploy/switch/retire is not idempotent (deploying a retired
    version again makes it a candidate).
    """

    def __init__(self, settings: Settings, on_event: Callable[[ModelChanged], object]) -> None:
        super().__init__(
            settings.kafka,
            settings.topics.models,
            settings.background_fetch_max_wait_ms,
            "visearch-model-watcher",
            # Deploys are rare, and uploads a worker embeds before it has loaded the
            # candidate reach the candidate through the backfill anyway, so the
            # watcher idles like the other background consumers: at the service's
            # idle wait, two watchers (API and worker) and the broker answering them
            # cost ~0.02 of a core, half of an idle stack (bench.cpu_budget).
            idle_fetch_max_wait_ms=settings.background_idle_fetch_max_wait_ms,
            # Nobody waits for it to stop: it may block as long as it fetches.
            longest_poll_ms=settings.background_idle_fetch_max_wait_ms,
        )
        self.on_event = on_event
        self._delivered: set[tuple[str, str, str, float]] = set()

    def starting_offsets(self) -> dict[int, int]:
        return {0: 0}

    def start_and_catch_up(self, timeout_s: float) -> bool:
        """Start, then wait until the topic has been read to its end; False if it cannot be.

        A consumer that fails to start never catches up: that is reported at
        once instead of after the whole timeout.
        """
        deadline = time.monotonic() + timeout_s
        self.start()
        if not self.ready.wait(timeout_s) or self.error is not None:
            return False
        return self.caught_up.wait(max(0.0, deadline - time.monotonic()))

    def handle(self, partition: int, records: Sequence[Any]) -> None:
        for record in records:
            self._deliver(record.value or b"")

    def _deliver(self, value: bytes) -> None:
        try:
            event = decode(ModelChanged, value)
        except SchemaError as exc:
            log.warning("skipping a bad models record: %s", exc)
            return
        identity = (event.action, event.version, event.model_dir, event.changed_at)
        if identity in self._delivered:
            return
        self._delivered.add(identity)
        try:
            self.on_event(event)
        except Exception:  # one bad model dir must not stop the watcher
            log.exception("model event %s %s failed", event.action, event.version)


OTHER_MODEL = "other"


def model_label(version: str, known: Container[str]) -> str:
    """An interaction's model version as a metrics label: ``version`` if the registry
    names it (or it is empty), else ``other``."""
    return version if not version or version in known else OTHER_MODEL


class KnownModels:
    """Every model version the registry has ever named, kept current by a watcher.

    Interactions carry the ``model_version`` their client echoes; anything
    can be written there, and each distinct value used to become a
    Prometheus label and a row of ``/v1/feedback`` (4 x 500 events with new
    versions: ``/metrics`` 6 KB -> 511 KB, unbounded). :meth:`label` keeps a
    registered version (serving, candidate or retired), an empty one, and
    calls everything else ``other``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._versions: set[str] = set()
        self._lock = threading.Lock()
        try:
            self._versions.add(read_metadata(settings.resolved_model_dir).version)
        except Exception as exc:  # no model here (e.g. a feedback pod): the topic names them
            log.info("no model directory to name the serving version: %s", exc)
        self.watcher: ModelWatcher | None = None

    def start(self, timeout_s: float = 30.0) -> KnownModels:
        """Read the models topic to its end, then follow it (again after a stop)."""
        self.watcher = ModelWatcher(self.settings, self._on_event)
        if not self.watcher.start_and_catch_up(timeout_s):
            raise TimeoutError("the models topic could not be read")
        return self

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def _on_event(self, event: ModelChanged) -> None:
        with self._lock:
            self._versions.add(event.version)

    def label(self, version: str) -> str:
        """See :func:`model_label`."""
        with self._lock:
            return model_label(version, self._versions)


def model_event(action: str, version: str, model_dir: Path | str = "") -> ModelChanged:
    return ModelChanged(
        version=version, action=action, model_dir=str(model_dir), changed_at=time.time()
    )
