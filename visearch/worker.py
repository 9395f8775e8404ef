"""``visearch worker``: the Faust worker process that runs the embedding agent."""

from __future__ import annotations

import logging
from typing import Any

import faust

from streams.agents import register_agents
from streams.app import create_app
from streams.encoder_set import EncoderSet
from streams.settings import Settings
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Create topics, load the active encoders, and run the Faust worker until stopped."""
    ensure_topics(settings)
    encoders = EncoderSet(settings).start()
    app = create_app(settings)
    register_agents(app, settings, encoders)
    log_assignments(app, settings.topics.uploads)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()


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
