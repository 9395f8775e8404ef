"""``visearch worker``: the Faust worker process that runs the embedding agent."""

from __future__ import annotations

import faust

from encoders.runtime import OnnxEncoder
from streams.agents import register_agents
from streams.app import create_app
from streams.settings import Settings
from streams.topics import ensure_topics


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Create topics, load the encoder, and run the Faust worker until stopped."""
    ensure_topics(settings)
    encoder = OnnxEncoder(settings.resolved_model_dir, threads=settings.ort_threads)
    app = create_app(settings)
    register_agents(app, settings, encoder)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
