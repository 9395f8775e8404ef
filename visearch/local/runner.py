"""``visearch run``: the whole system on this machine, with the demo corpus."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from streams.settings import Settings
from visearch.api.from_stack import stack_api
from visearch.api.serving import serve
from visearch.local.ingest import ingest_folder
from visearch.local.stack import LocalStack
from visearch.models.serving import with_serving_model

log = logging.getLogger(__name__)


def run_service(settings: Settings, demo_dir: Path | None, parity_dir: Path) -> None:
    """Start broker, worker, index and API; replay stored images; serve until Ctrl-C.

    The encoder is exported on first start and served in int8 where that
    agrees with fp32 on this CPU (``VISEARCH_MODEL_PRECISION``, visearch.models.serving).

    The embedded broker starts empty every time, so every image already in
    the store is published again (a new epoch of the log) before new demo
    images are added: nothing uploaded earlier is lost by a restart.
    """
    settings, precision = with_serving_model(settings, demo_dir or parity_dir)
    with LocalStack(settings) as stack:
        stack.precision = precision
        # A child that keeps dying ends the service, loudly (see visearch.local.supervision).
        stack.on_failure = lambda: os.kill(os.getpid(), signal.SIGTERM)
        assert stack.publisher is not None and stack.search is not None
        replayed = stack.republish_store()
        log.info("replayed %d stored images into the log", replayed)
        if demo_dir is not None:
            summary = ingest_folder(settings, stack.store, stack.publisher, demo_dir, "demo")
            log.info(
                "demo corpus: %d published, %d rejected", summary.published, len(summary.rejected)
            )
        api = stack_api(stack)
        url = f"http://{settings.http_host}:{settings.http_port}/"
        print(f"visearch is up: open {url}  (Ctrl-C stops everything)", flush=True)
        serve(api, settings.http_host, settings.http_port, settings)
        if stack.failure is not None:
            raise SystemExit(f"visearch run: {stack.failure}")


def run_api(settings: Settings) -> None:
    """``visearch api``: only the search API, for a cluster (the Helm chart).

    Workers and shards run as their own pods there (``VISEARCH_SHARD_URLS``),
    so unlike :func:`run_service` this starts no worker, exports no model (the
    image carries it) and replays nothing: a real Kafka keeps the log, and
    replaying the whole image store on every API restart would re-embed it.
    """
    with LocalStack(settings, with_worker=False) as stack:
        assert stack.publisher is not None and stack.search is not None
        api = stack_api(stack)
        serve(api, settings.http_host, settings.http_port, settings)
