"""A whole visearch deployment on one machine, for ``run``, ``selftest`` and tests.

Broker (embedded unless a cluster is configured) and the embedding worker run
as child processes; index shards and the search service run in this process,
fed by their own consumers. Everything stops with the stack.

A supervisor thread restarts the embedded broker when it dies and the worker
when it exits for a new log epoch (see :meth:`LocalStack._supervise`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Self

from prometheus_client.registry import Collector

from feedback.service import FeedbackService
from index.search import SearchService
from index.shard import IndexShard
from streams.broker import EmbeddedBroker, broker_reachable, free_port
from streams.dead_letter_monitor import DeadLetterMonitor
from streams.encoder_set import encoder_from_settings
from streams.epoch import EXIT_NEW_EPOCH
from streams.errors import VisearchError
from streams.lifecycle import Lifecycle, die_with_parent
from streams.model_journal import republish_journal
from streams.process_tuning import tune_process
from streams.progress import progress_check
from streams.publisher import EventPublisher
from streams.settings import PREFIX, Settings
from streams.shard_consumer import ShardConsumer
from streams.topics import ensure_topics
from visearch.catalog.store import ImageStore
from visearch.catalog.uploads import publish_stored
from visearch.local.supervision import (
    GiveUp,
    RestartCollector,
    SupervisedChild,
    child_restart_counts,
)
from visearch.models.rollout import ModelRollout
from visearch.models.serving import PrecisionChoice, PrecisionCollector
from visearch.processes.shard_metrics import ShardCollector
from visearch.processes.shards import remote_shards, search_service

# The worker writes its progress beacon every 2 s; older than this means it is frozen.
PROGRESS_MAX_AGE_S = 10.0

log = logging.getLogger(__name__)


class StackError(VisearchError, RuntimeError):
    """A part of the local stack failed to start or died."""


def settings_env(settings: Settings) -> dict[str, str]:
    """``VISEARCH_*`` variables that reproduce ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    for name, value in vars(settings).items():
        env[f"{PREFIX}{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


def isolated_settings(settings: Settings, data_dir: Path, purpose: str) -> Settings:
    """A private copy of ``settings``: own data dir, topics, consumer group and broker port.

    For selftests and benchmarks that must not disturb (or be disturbed by) a
    running deployment; the model directory is shared, it is read-only.
    """
    tag = f"{purpose}-{uuid.uuid4().hex[:8]}"
    return settings.with_overrides(
        data_dir=data_dir,
        model_dir=str(settings.resolved_model_dir.resolve()),
        topic_prefix=tag,
        app_id=f"visearch-{tag}",
        broker_port=free_port() if settings.embedded_broker else settings.broker_port,
    )


class LocalStack(Lifecycle):
    """Starts broker, topics, worker, shards and search; stops them in reverse."""

    def __init__(
        self, settings: Settings, log_dir: Path | None = None, with_worker: bool = True
    ) -> None:
        self.settings = settings
        # False for `visearch api`: in a cluster the embedding workers are their own pods.
        self.with_worker = with_worker
        self.log_dir = log_dir or settings.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.worker_child: SupervisedChild | None = None
        self.rollout: ModelRollout | None = None
        # The encoder precision `visearch run` chose (visearch.models.serving), shown on /metrics.
        self.precision: PrecisionChoice | None = None
        self.dead_letters: DeadLetterMonitor | None = None
        self.search: SearchService | None = None
        self.publisher: EventPublisher | None = None
        # In-process feedback aggregation unless a `visearch feedback` process does it.
        self.feedback: FeedbackService | None = None
        self.store = ImageStore(settings.image_store_dir)
        # How long a dead embedded broker stays down before it is restarted.
        self.broker_restart_delay_s = 1.0
        self.broker_restarts = 0
        # Why the supervisor gave up (a child that kept dying), and whom it tells:
        # `visearch run` stops serving and exits non-zero.
        self.failure: str | None = None
        self.on_failure: Callable[[], None] | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        """The current embedding worker process (a new one after each restart)."""
        return self.worker_child.process if self.worker_child is not None else None

    def start(self) -> Self:
        settings = self.settings
        tune_process(settings)  # benches and tests run stacks in-process
        try:
            if settings.embedded_broker:
                self.broker = EmbeddedBroker(settings.broker_host, settings.broker_port).start()
            ensure_topics(settings)
            self.dead_letters = DeadLetterMonitor(settings)
            self.dead_letters.start()
            self.publisher = EventPublisher(settings)
            if settings.embedded_broker:  # a fresh, empty broker: restore the registry
                republish_journal(settings, self.publisher)
            if self.with_worker:
                self._start_worker()
            self._start_search()
            if not settings.feedback_url:
                # The rollout already follows the model registry: one watcher for both.
                label = self.rollout.model_label if self.rollout is not None else None
                self.feedback = FeedbackService(settings, model_label=label).start()
            if self.broker is not None or self.worker is not None:
                self._supervisor = threading.Thread(
                    target=self._supervise, name="stack-supervisor", daemon=True
                )
                self._supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_worker(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.worker_log = self.log_dir / "worker.log"
        self.worker_child = SupervisedChild(
            "embedding worker", self._spawn_worker, planned_exit=EXIT_NEW_EPOCH
        )
        self.worker_child.start()
        log.info("embedding worker log %s", self.worker_log)

    def _spawn_worker(self) -> subprocess.Popen[bytes]:
        with self.worker_log.open("ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "visearch", "worker"],
                env=settings_env(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def republish_store(self) -> int:
        """Publish every stored image into the log again; returns how many.

        The embedded broker starts empty (at ``visearch run``, and after it
        died and was restarted), so the image store puts every image back into
        the new log epoch: replicas and shards that start later, and a
        candidate model's backfill, find the whole catalogue there. The
        indexes that are running keep their content; replay is idempotent.
        """
        assert self.publisher is not None
        count = 0
        for stored in self.store:
            publish_stored(self.settings, self.store, self.publisher, stored)
            count += 1
        self.publisher.flush()
        return count

    def _supervise(self) -> None:
        """Restart the children that die: the embedded broker, then the worker.

        The embedded broker keeps its log in memory, so the restarted one is a
        new, empty log epoch. It is seeded as at start: topics, the model
        registry's journal, every stored image. Each consumer notices the new
        epoch itself: the log followers in this process seek to its start,
        the worker exits with :data:`~visearch.processes.worker.EXIT_NEW_EPOCH` and is
        started again at once. A worker that dies otherwise (SIGKILL, the OOM
        killer, a crash) is restarted with backoff (:mod:`visearch.local.supervision`);
        after repeated deaths right after its start the stack gives up:
        ``failure`` says why and ``on_failure`` is called.
        """
        while not self._stopping.wait(0.5):
            try:
                if self.broker is not None and not self.broker.is_running():
                    self._restart_broker()
                if self.worker_child is not None:
                    self.worker_child.check()
            except GiveUp as exc:
                self.failure = str(exc)
                log.critical("stack supervisor gives up: %s", exc)
                if self.on_failure is not None:
                    self.on_failure()
                return
            except Exception:  # report, and try again at the next round
                log.exception("stack supervisor: restart failed, retrying")

    def _restart_broker(self) -> None:
        assert self.broker is not None and self.publisher is not None
        log.error(
            "the embedded broker on %s exited with code %s: its in-memory log is lost; "
            "restarting it in %.1f s as a new, empty log epoch",
            self.broker.bootstrap_servers,
            self.broker.returncode,
            self.broker_restart_delay_s,
        )
        if self._stopping.wait(self.broker_restart_delay_s):
            return
        self.broker.start()
        self.broker_restarts += 1
        ensure_topics(self.settings)
        events = republish_journal(self.settings, self.publisher)
        images = self.republish_store()
        log.warning(
            "embedded broker restarted on %s: topics created, %d model events and %d stored "
            "images republished into the new log epoch",
            self.broker.bootstrap_servers,
            events,
            images,
        )

    def _start_search(self) -> None:
        """Local shards follow the model registry; remote shards serve their own model."""
        settings = self.settings
        if settings.remote_shards:
            encoder = encoder_from_settings(settings.resolved_model_dir, settings)
            self.search = search_service(
                settings,
                encoder,
                remote_shards(settings, encoder.dim),
                visible=self.store.visible,
                image_path=self.store.path_of,
            )
            return
        assert self.publisher is not None
        self.rollout = ModelRollout(
            settings, self.publisher, visible=self.store.visible, image_path=self.store.path_of
        ).start()
        self.search = self.rollout.search

    @property
    def shards(self) -> list[IndexShard]:
        """The local shards of the serving model version."""
        serving = self.rollout.serving if self.rollout is not None else None
        return serving.shards if serving is not None else []

    @property
    def consumers(self) -> list[ShardConsumer]:
        serving = self.rollout.serving if self.rollout is not None else None
        return serving.consumers if serving is not None else []

    def check_alive(self) -> None:
        """Raise :class:`StackError` if a child process has died for good.

        A dead embedded broker and a dead worker are being restarted while the
        supervisor runs; once it has given up, ``failure`` says why.
        """
        if self.failure is not None:
            raise StackError(self.failure)
        supervised = self._supervisor is not None and self._supervisor.is_alive()
        if self.broker is not None and not self.broker.is_running() and not supervised:
            raise StackError("the embedded broker has stopped")
        exited = self.worker.poll() if self.worker is not None else None
        if exited is not None and not supervised:
            raise StackError(f"the embedding worker exited with {exited}; see {self.worker_log}")

    def wait_searchable(self, image_ids: list[str], timeout_s: float) -> set[str]:
        """Wait until every image is in some shard; returns those still missing.

        Polling is fine here: the time an image became searchable is recorded
        by the shard itself, not by this loop.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            missing = {i for i in image_ids if self.searchable_at(i) is None}
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.01)

    def readiness(self) -> dict[str, dict[str, object]]:
        """Each check of ``/readyz``: ``{"ok": bool, ...details}``.

        Ready means: the broker answers, every local shard has recovered and
        is consuming within ``VISEARCH_READINESS_MAX_LAG`` records of the log's
        end, and the worker and the feedback aggregator (where they run in
        this stack) are alive. A load balancer then only sends searches to an
        API whose indexes are current.
        """
        checks: dict[str, dict[str, object]] = {}
        connected = broker_reachable(self.settings.bootstrap_servers)
        if self.broker is not None:
            connected = connected and self.broker.is_running()
        checks["broker"] = {"ok": connected}  # no address: /readyz is anonymous
        if self.consumers:
            alive = all(
                c.is_alive() and c.ready.is_set() and c.error is None for c in self.consumers
            )
            lag = sum(sum(c.lag.values()) for c in self.consumers)
            checks["shards"] = {"ok": alive, "local": len(self.consumers)}
            checks["index_lag"] = {
                "ok": lag <= self.settings.readiness_max_lag,
                "records": lag,
                "max": self.settings.readiness_max_lag,
            }
        if self.with_worker:
            checks["worker"] = {"ok": self.worker is not None and self.worker.poll() is None}
            # Alive is not enough: a frozen worker or a stuck batch embeds nothing.
            checks["embedding"] = progress_check(
                self.settings.worker_progress_path,
                max_busy_s=2 * self.settings.embed_event_timeout_s,
                max_age_s=PROGRESS_MAX_AGE_S,
            )
        if self.feedback is not None:
            checks["feedback"] = {"ok": self.feedback.is_alive()}
        return checks

    def searchable_at(self, image_id: str) -> float | None:
        for shard in self.shards:
            at = shard.searchable_at.get(image_id)
            if at is not None:
                return at
        return None

    def collectors(self) -> list[Collector]:
        """Prometheus collectors of the stack's own parts (for the API's /metrics)."""
        parts: list[Collector] = [RestartCollector(self.restart_counts)]
        if self.precision is not None:
            parts.append(PrecisionCollector(self.precision))
        if self.rollout is not None:  # in-process shards (remote ones serve their own)
            parts.append(ShardCollector(self._local_shards))
        if self.dead_letters is not None:
            parts.append(self.dead_letters)
        return parts

    def _local_shards(self) -> list[tuple[int, IndexShard, ShardConsumer]]:
        """The serving version's shards by id, with their consumers (for /metrics)."""
        serving = self.rollout.serving if self.rollout is not None else None
        if serving is None:
            return []
        pairs = zip(serving.shards, serving.consumers, strict=True)
        return [(shard_id, shard, consumer) for shard_id, (shard, consumer) in enumerate(pairs)]

    def restart_counts(self) -> list[tuple[str, str, int]]:
        """Restarts of the stack's children by reason (``visearch_child_restarts_total``)."""
        counts = [("embedded broker", "died", self.broker_restarts)] if self.broker else []
        if self.worker_child is not None:
            counts += child_restart_counts(self.worker_child)
        return counts

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(60)
            self._supervisor = None
        if self.dead_letters is not None:
            self.dead_letters.stop()
            self.dead_letters = None
        if self.feedback is not None:
            self.feedback.stop()
            self.feedback = None
        if self.rollout is not None:
            self.rollout.stop()
            self.rollout = None
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        if self.broker is not None:
            self.broker.stop()
