"""``visearch worker``: the Faust worker process that runs the embedding agent.

A new log epoch of the uploads topic (the embedded broker restarted and lost
its log, or the topic was recreated) ends the process with
:data:`EXIT_NEW_EPOCH`, and whoever runs it starts a fresh one
(:class:`visearch.local.stack.LocalStack`; Kubernetes restarts the pod). Why not
seek back to offset 0 in place: Faust keeps its own per-partition "read",
"acked" and "committed" offsets and drops every record at or below them as
already seen, and resetting those means reaching into private state of its
consumer. A fresh process has none of it and starts the new log from its
beginning (``consumer_auto_offset_reset="earliest"``), because the consumer
group of an embedded broker is named after the epoch (:func:`app_settings`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

import faust

from streams.agents import register_agents
from streams.app import create_app
from streams.encoder_set import EncoderSet
from streams.epoch import EXIT_NEW_EPOCH, EpochTracker
from streams.progress import ProgressBeacon
from streams.settings import Settings
from streams.topics import TopicEpochReader, ensure_topics, topic_epoch
from visearch.catalog.kept_uploads import InlineUploadKeeper
from visearch.catalog.store import ImageStore

log = logging.getLogger(__name__)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Create topics, load the active encoders, and run the Faust worker until stopped."""
    if settings.worker_nice:
        # Ingest is background work: on a machine shared with the search API
        # the scheduler should serve queries first (see VISEARCH_WORKER_NICE).
        os.nice(settings.worker_nice)
    ensure_topics(settings)
    epoch = topic_epoch(settings.kafka, settings.topics.uploads)
    encoders = EncoderSet(settings).start()
    app = create_app(app_settings(settings, epoch))
    progress = ProgressBeacon(settings.worker_progress_path).start()
    keeper = None
    if settings.keep_inline_uploads:
        keeper = InlineUploadKeeper(ImageStore(settings.image_store_dir))
    register_agents(app, settings, encoders, progress, keeper)
    log_assignments(app, settings.topics.uploads)
    exit_on_new_epoch(settings, epoch)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()


def app_settings(settings: Settings, epoch: str) -> Settings:
    """With the embedded broker, one consumer group per log epoch (the app id names it).

    Committed offsets live in the broker. A worker of the old epoch that
    reconnects to the restarted broker can rejoin and commit positions in
    the new log before it notices the new epoch; a fresh worker in the same
    group would then start after them and never embed the records before.
    In a group of its own epoch it starts from the new log's beginning.
    Real Kafka keeps its logs and topic ids, and its group stays the app id
    (renaming it would re-embed everything once).
    """
    if not settings.embedded_broker or not epoch:
        return settings
    return settings.with_overrides(app_id=f"{settings.app_id}-{epoch}")


def exit_on_new_epoch(settings: Settings, epoch: str, interval_s: float = 5.0) -> threading.Thread:
    """Watch the uploads topic's epoch in a thread; exit the process when it changes.

    ``os._exit`` rather than a graceful Faust stop: nothing here needs
    saving (a fresh worker re-embeds the whole new log, and duplicate
    embeddings are idempotent in the index), and a graceful stop would spend
    seconds committing offsets that are meaningless in the new epoch.
    """
    topic = settings.topics.uploads
    tracker = EpochTracker(
        TopicEpochReader(settings.kafka, topic),
        f"topic {topic} on {settings.bootstrap_servers}",
        epoch,
        "embedding worker",
    )

    def watch() -> None:
        while tracker.check() is None:
            time.sleep(interval_s)
        log.error(
            "embedding worker: exiting with code %d so that a fresh worker embeds the new "
            "log of %s from its start",
            EXIT_NEW_EPOCH,
            topic,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_NEW_EPOCH)

    thread = threading.Thread(target=watch, name="epoch-watch", daemon=True)
    thread.start()
    return thread


def log_assignments(app: faust.App, topic: str) -> None:
    """Log which partitions of ``topic`` this worker owns after every rebalance.

    Faust does not say, and with several workers in the group it is the first
    thing an operator (or the fault tests) needs to know after a crash.
    """

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        assigned = args[0] if args else ()
        partitions = sorted(tp.partition for tp in assigned if tp.topic == topic)
        log.info("assigned %s partitions %s", topic, partitions)
