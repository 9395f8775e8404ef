"""The visearch Faust transport passes the configured fetch wait to aiokafka."""

from __future__ import annotations

import asyncio

from streams.app import EMBEDDED_BROKER_TIMEOUTS, create_app
from streams.settings import Settings
from streams.transport import ConsumerThread, Transport


def _worker_consumer_wait(settings: Settings) -> int:
    async def build() -> int:
        app = create_app(settings)
        assert isinstance(app.transport, Transport)
        thread = app.consumer._thread
        assert isinstance(thread, ConsumerThread)
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_fetch_wait_comes_from_settings_not_faust_default() -> None:
    assert _worker_consumer_wait(Settings(fetch_max_wait_ms=37)) == 37
    assert _worker_consumer_wait(Settings(fetch_max_wait_ms=1500)) == 1500


def test_embedded_broker_gets_short_timeouts_real_cluster_keeps_defaults() -> None:
    embedded = create_app(Settings())
    assert (
        embedded.conf.broker_session_timeout == EMBEDDED_BROKER_TIMEOUTS["broker_session_timeout"]
    )
    external = create_app(
        Settings(kafka_bootstrap="kafka-1:9092,kafka-2:9092", embedded_broker=False)
    )
    assert external.conf.broker_session_timeout > EMBEDDED_BROKER_TIMEOUTS["broker_session_timeout"]
    assert [url.host for url in external.conf.broker] == ["kafka-1", "kafka-2"]
