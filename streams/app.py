"""The Faust application: configuration for the embedded broker or a real cluster."""

from __future__ import annotations

import faust
from faust.types.auth import CredentialsT

from streams.batching import BatchingStream
from streams.kafka_connection import KafkaConnection, Secret
from streams.settings import Settings

# Settings the embedded broker needs: without them a consumer-group join takes
# ~30 s on it (measured). A real cluster keeps Faust's defaults.
EMBEDDED_BROKER_TIMEOUTS = {
    "broker_session_timeout": 4.0,
    "broker_heartbeat_interval": 1.0,
    "broker_rebalance_timeout": 4.0,
    "broker_commit_interval": 0.5,
}


def faust_credentials(kafka: KafkaConnection) -> CredentialsT | None:
    """The Faust app's ``broker_credentials``: the same protocol and TLS context as kafka-python.

    Faust hands these to aiokafka for its consumers and producers; None keeps
    plaintext (Faust's default).
    """
    context = kafka.ssl_context()
    if kafka.uses_sasl:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=Secret(kafka.sasl_password),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,  # None: SASL_PLAINTEXT, else SASL_SSL
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: Settings) -> faust.App:
    """A Faust app bound to the configured cluster through the visearch transport."""
    brokers = [f"visearch://{server}" for server in settings.bootstrap_servers.split(",")]
    options: dict[str, object] = {
        "broker": brokers,
        "store": "memory://",
        "topic_replication_factor": settings.replication_factor,
        "topic_partitions": settings.upload_partitions,
        "topic_allow_declare": False,  # topics are created up front with explicit counts
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": settings.worker_web_port > 0,
        "web_port": settings.worker_web_port or 6066,
        "datadir": str(settings.data_dir / "faust"),
        "broker_credentials": faust_credentials(settings.kafka),
        # take_batches: batches that wait for their first event without a timer.
        "Stream": BatchingStream,
    }
    if settings.embedded_broker:
        options.update(EMBEDDED_BROKER_TIMEOUTS)
    app = faust.App(settings.app_id, **options)  # type: ignore[arg-type]
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms  # type: ignore[attr-defined]
    app.idle_fetch_max_wait_ms = settings.idle_fetch_max_wait_ms  # type: ignore[attr-defined]
    return app
