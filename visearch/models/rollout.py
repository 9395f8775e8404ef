"""Model versions in the API process: deploy beside, backfill, switch atomically, drop.

:class:`ModelRollout` follows the model registry (the models topic, read by
a :class:`~streams.model_registry.ModelWatcher`) and keeps one
:class:`~visearch.models.version_index.VersionIndex` per active version: the serving
one that searches use, and a candidate per deployed version whose index fills
from live uploads (workers embed with every active version) and from
``visearch model backfill``. A switch is refused until the candidate holds
every image the serving index holds; then one assignment moves searches to
the candidate's encoder and shards together, and the old version's shards are
stopped (its snapshots stay on disk until deleted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from encoders.model_dir import ModelDirError, read_metadata
from index.search import SearchService
from streams.errors import CodedError
from streams.lifecycle import Lifecycle
from streams.model_journal import append_to_journal, journal_path
from streams.model_registry import (
    ModelRegistry,
    ModelWatcher,
    RegistryError,
    model_event,
    model_label,
)
from streams.publisher import EventPublisher
from streams.schemas import ModelChanged
from streams.settings import Settings
from visearch.models.version_index import VersionIndex
from visearch.processes.shards import search_service

log = logging.getLogger(__name__)


class RolloutError(CodedError, RuntimeError):
    """A deploy, switch or retire that cannot happen now; ``code`` is for the API."""


class ModelRollout(Lifecycle):
    """The serving and candidate indexes of this process, in step with the registry."""

    def __init__(
        self,
        settings: Settings,
        publisher: EventPublisher,
        visible: Callable[[str], bool] | None = None,
        image_path: Callable[[str], Path] | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        # The image store's denylist, checked by every search whatever the version.
        self.visible = visible
        self.image_path = image_path  # stored originals, for crop verification
        self.registry = ModelRegistry.serving_from(settings.resolved_model_dir)
        self.watcher = ModelWatcher(settings, self._on_event)
        self.serving: VersionIndex | None = None
        self.candidates: dict[str, VersionIndex] = {}
        self.search: SearchService | None = None
        self._lock = threading.RLock()
        self._live = False
        # The embedded broker forgets the models topic on restart: keep a journal.
        self.journal = journal_path(settings) if settings.embedded_broker else None

    def start(self, timeout_s: float = 30.0) -> Self:
        if not self.watcher.start_and_catch_up(timeout_s):
            raise RolloutError("models_unreadable", "the models topic could not be read")
        with self._lock:
            active = self.registry.active()
            self.serving = VersionIndex(self.settings, Path(active[0].model_dir)).start()
            self.search = search_service(
                self.settings,
                self.serving.encoder,
                self.serving.shards,
                self.visible,
                self.image_path,
            )
            for candidate in active[1:]:
                self._start_candidate(candidate.version, candidate.model_dir)
            self._live = True
        return self

    def stop(self) -> None:
        self.watcher.stop()
        with self._lock:
            self._live = False
            for index in [self.serving, *self.candidates.values()]:
                if index is not None:
                    index.stop()
            self.candidates.clear()

    # ------------------------------------------------------------ registry events

    def _on_event(self, event: ModelChanged) -> None:
        with self._lock:
            if not self.registry.apply(event) or not self._live:
                return
            if self.journal is not None:
                append_to_journal(self.journal, event)
            if event.action == "deploy":
                self._start_candidate(event.version, event.model_dir)
            elif event.action == "switch":
                self._switch_to(event.version)
            elif event.version in self.candidates:
                self.candidates.pop(event.version).stop()
                log.info("model %s retired", event.version)

    def _start_candidate(self, version: str, model_dir: str) -> None:
        try:
            index = VersionIndex(self.settings, Path(model_dir)).start()
        except Exception:
            log.exception("cannot build the index of model %s from %s", version, model_dir)
            return
        self.candidates[version] = index
        log.info("model %s deployed: its index builds beside %s", version, self.registry.serving)

    def _switch_to(self, version: str) -> None:
        candidate = self.candidates.pop(version, None)
        if candidate is None:
            log.error("switch to %s, but this process has no index for it", version)
            return
        assert self.search is not None and self.serving is not None
        previous = self.serving
        self.search.use(candidate.encoder, candidate.shards)
        self.serving = candidate
        previous.stop()
        log.info("searches moved from model %s to %s", previous.version, version)

    # ------------------------------------------------------------ operations (API)

    def status(self) -> dict[str, Any]:
        with self._lock:
            serving_ids = self.serving.image_ids() if self.serving else set()
            versions = []
            for version in self.registry.versions.values():
                index = self._index_of(version.version)
                entry: dict[str, Any] = {
                    "version": version.version,
                    "state": version.state,
                    "model_dir": version.model_dir,
                }
                if index is not None:
                    ids = index.image_ids()
                    entry["indexed"] = len(ids)
                    entry["missing"] = len(serving_ids - ids)
                    entry["dim"] = index.encoder.dim
                versions.append(entry)
            return {"serving": self.registry.serving, "versions": versions}

    def model_label(self, version: str) -> str:
        """See :func:`streams.model_registry.model_label`: this registry's versions."""
        return model_label(version, self.registry.versions)

    def _index_of(self, version: str) -> VersionIndex | None:
        if self.serving is not None and self.serving.version == version:
            return self.serving
        return self.candidates.get(version)

    def deploy(self, model_dir: Path, timeout_s: float = 60.0) -> str:
        """Register the model in ``model_dir``; returns its version once its index runs here."""
        try:
            version = read_metadata(model_dir).version
        except (ModelDirError, OSError, ValueError) as exc:  # ValueError: e.g. a NUL in the path
            raise RolloutError("bad_model", f"{model_dir}: {exc}") from exc
        self._publish(model_event("deploy", version, model_dir.resolve()))
        self._wait(lambda: self._index_of(version) is not None, timeout_s, "deploy", version)
        return version

    def switch(self, version: str, timeout_s: float = 30.0) -> None:
        """Move searches to ``version``; refused while its index misses serving images."""
        with self._lock:
            candidate = self.candidates.get(version)
            if candidate is None:
                raise RolloutError("unknown_model", f"model {version} is not a deployed candidate")
            assert self.serving is not None
            missing = len(self.serving.image_ids() - candidate.image_ids())
            if missing:
                raise RolloutError(
                    "backfill_incomplete",
                    f"model {version} lacks {missing} images the serving index holds: "
                    f"run `visearch model backfill {version}` and wait",
                )
        self._publish(model_event("switch", version))
        # Done when searches use it, not when the registry says so: the registry
        # changes first and the swap follows under the same lock.
        self._wait(self._serving_is(version), timeout_s, "switch", version)

    def retire(self, version: str) -> None:
        """Drop candidate ``version`` everywhere (the serving one cannot be retired)."""
        with self._lock:
            if version == self.registry.serving:
                raise RolloutError(
                    "not_allowed", f"model {version} serves searches: switch away first"
                )
            if version not in self.candidates:
                raise RolloutError("unknown_model", f"model {version} is not a deployed candidate")
        self._publish(model_event("retire", version))

    def _publish(self, event: ModelChanged) -> None:
        with self._lock:
            try:
                self.registry.check(event)
            except RegistryError as exc:
                raise RolloutError("not_allowed", str(exc)) from exc
        self.publisher.publish(self.settings.topics.models, event.version, event, timeout_s=10)

    def _serving_is(self, version: str) -> Callable[[], bool]:
        def check() -> bool:
            with self._lock:
                return self.search is not None and self.search.encoder.version == version

        return check

    def _wait(self, done: Any, timeout_s: float, action: str, version: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise RolloutError("timeout", f"{action} of {version} not applied in {timeout_s}s")
            time.sleep(0.05)
