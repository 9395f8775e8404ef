"""One frozen settings object, read from ``VISEARCH_*`` environment variables.

Every process (broker launcher, Faust worker, index shard, search API, CLI)
builds its configuration from the same object so that a value set once in the
environment means the same thing everywhere. Defaults run on a laptop: an
embedded broker on loopback, a ``./data`` directory, exact search.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from encoders.tiles import TILE_SCHEMES
from streams.kafka_connection import SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConnection
from streams.remote_fetch import parse_networks

PREFIX = "VISEARCH_"
# Shortest window retention (feedback/windows.py) minus one window.
MAX_ALLOWED_LATENESS_S = 2 * 3600 - 60
MAX_VERIFY_TOP = 500  # pixel-matching more candidates than this costs seconds a query
MAX_VERIFY_SCALES = 15
MAX_QUERY_EXPANSION = 50
# The most interactions one request may carry, whatever the setting: the API
# refuses longer lists before validating a single element.
MAX_INTERACTIONS_PER_REQUEST = 10_000  # index.query_expansion.MAX_NEIGHBOURS (no index import here)


class SettingsError(ValueError):
    """A ``VISEARCH_*`` variable holds a value that cannot be used."""


@dataclass(frozen=True)
class TopicNames:
    """Kafka topic names; one prefix keeps several deployments apart on one cluster."""

    uploads: str
    updates: str
    embeddings: str
    interactions: str
    labeled_pairs: str
    dead_letter: str
    models: str

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        return cls(
            uploads=f"{prefix}.image-uploads",
            updates=f"{prefix}.image-updates",
            embeddings=f"{prefix}.embeddings",
            interactions=f"{prefix}.interactions",
            labeled_pairs=f"{prefix}.labeled-pairs",
            dead_letter=f"{prefix}.dead-letter",
            models=f"{prefix}.models",
        )


@dataclass(frozen=True)
class Settings:
    """Configuration for every visearch process.

    Field ``x`` is read from ``VISEARCH_X``; see :meth:`from_env`.
    """

    # Kafka. An explicit bootstrap list means "use that cluster"; otherwise the
    # embedded Tansu broker is started on ``broker_port``.
    kafka_bootstrap: str = ""
    embedded_broker: bool = True
    broker_host: str = "127.0.0.1"
    broker_port: int = 19092
    topic_prefix: str = "visearch"
    upload_partitions: int = 4
    update_partitions: int = 4
    embedding_partitions: int = 8
    interaction_partitions: int = 4
    replication_factor: int = 1
    # aiokafka's fetch wait; Faust hard-codes 1500 ms, which costs ~400 ms of
    # freshness per hop on the embedded broker (DESIGN.md).
    fetch_max_wait_ms: int = 20
    # The same wait for consumers whose delay no user sees: the dead-letter
    # monitor, the model watcher and the feedback aggregator (CTR goal: 5 s).
    # Each idle kafka-python consumer at 20 ms fetches 50 times a second; in
    # the soak the API process's three of them took ~30 % of a core (py-spy)
    # and the broker as much again to answer them.
    background_fetch_max_wait_ms: int = 250
    app_id: str = "visearch"
    # How clients authenticate to a real cluster (streams/kafka_connection.py
    # maps these for kafka-python and Faust). File paths are str, not Path:
    # Path("") is ".", and empty must mean "not set".
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)  # never printed
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""

    # Paths.
    data_dir: Path = Path("data")
    # Empty means <data_dir>/models/efficientnet-lite0. A str, not a Path:
    # Path("") is ".", which would silently mean "the current directory".
    model_dir: str = ""

    # Embedding.
    embed_batch_size: int = 16
    # Faust's take() waits this long after each batch for the next one to
    # fill, even when events are already queued: it is the latency floor of the
    # embedding hop. 2 ms lets batches form from whatever arrived while the
    # previous one was embedded (freshness p50 at 100 uploads/s on 2 cores:
    # 40 ms, against 103-125 ms with 20 ms) and costs ~6 % of a core when idle.
    embed_linger_s: float = 0.002
    # Tile vectors indexed beside each global vector for crop queries:
    # "none" (1 encoder pass per image), "quadrants" (4 quadrants + centre,
    # 6 passes: ~3x crop recall@1, 1/6 of the ingest throughput) or "thirds"
    # (4x4 overlapping third-size tiles, 17 passes: ~4.4x, 1/17).
    tiles: str = "none"
    ort_threads: int = 0  # 0: let ONNX Runtime decide
    # ONNX Runtime's intra-op threads busy-wait between runs by default. On a
    # machine shared with the broker, the API and the shards that spinning
    # steals the cores the other processes need (freshness p50 at 100 uploads/s
    # on 2 cores: p50 128 ms without spinning, 164-250 ms with). Turn it on
    # for a machine that only embeds.
    ort_spin: bool = False
    # Threads that read, decode and preprocess uploads beside the inference thread.
    decode_threads: int = 2
    max_inline_bytes: int = 750_000
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 40_000_000
    # Memory that all decodes of one process may hold at once (encoders/preprocess.py,
    # DecodeBudget): a decode reserves (bytes per stored pixel + 1) x pixels,
    # i.e. 5 for RGB(A) PNG, 3 for 16-bit grey, 2 for 8-bit grey or palette;
    # JPEGs are decoded at 1/2 to 1/8 scale first. 96 MiB admits a 19-megapixel
    # RGB PNG or a 32-megapixel 16-bit one, and keeps peak decode memory under
    # 100 MB whatever the number of concurrent requests; bigger images get 413.
    decode_memory_mb: int = 96
    # One upload may take this long to read, decode and preprocess in the
    # worker before it is dead-lettered (``prepare_timeout``) and its batch
    # goes on without it.
    embed_event_timeout_s: float = 10.0
    # http(s):// image URIs in upload events: one deadline for the whole fetch,
    # and loopback/private/link-local addresses refused unless allowed (SSRF).
    image_fetch_timeout_s: float = 5.0
    image_fetch_allow_private: bool = False
    # Networks (comma-separated CIDRs) that http(s) image URIs may reach besides
    # global addresses, e.g. an internal image server, without allowing every
    # private address. IPv6 forms that embed an IPv4 address are judged by it.
    image_fetch_allow_networks: str = ""
    # Directories (comma-separated) whose files upload events may name as
    # file:// URIs besides the image store, e.g. a volume the backends share.
    # In the store itself an event may only name its own image's file.
    image_roots: str = ""

    # Index.
    # A partition searches exactly (Flat) until it holds ann_threshold live
    # vectors, then a background rebuild moves it to this faiss factory.
    # IVF over HNSW: at 1M vectors of real-image embeddings IVF1024 with nprobe 16
    # reached recall@10 0.978 at p95 2.1 ms, HNSW32 0.82 at efSearch 64 and 0.86
    # at 128 (bench/index.py); IVF also needs no graph repair after deletes.
    index_factory: str = "IVF1024,Flat"
    index_shards: int = 1
    ann_threshold: int = 50_000
    ef_search: int = 64
    nprobe: int = 16
    # Retired rows (deleted or replaced) past this share of a partition trigger
    # a background compaction.
    compact_ratio: float = 0.25
    snapshot_interval_s: float = 30.0
    # Separate shard processes (`visearch shard`): this process's shard id
    # (-1: the ordinal at the end of $HOSTNAME, as in a StatefulSet, else 0),
    # its HTTP port, and for the search API the shard URLs to scatter to
    # (comma-separated; empty: shards run inside the API process).
    shard_id: int = -1
    shard_http_port: int = 8180
    shard_urls: str = ""
    # Results whose mutual cosine similarity reaches this are near-duplicates:
    # only the best-ranked one is kept. Above 1 disables the collapse.
    dedup_threshold: float = 0.96
    # Crop queries: the top ``verify_top`` hits of a search by image are
    # checked for a pixel match with the query (index/crop_verify.py) and the
    # matches move first. 0: off. A match needs a normalised cross-correlation
    # of ``verify_min_score``; ``verify_scales`` > 1 also tries rescaled crops.
    verify_top: int = 0
    verify_min_score: float = 0.9
    verify_scales: int = 1
    # Query expansion (index/query_expansion.py): each search first finds its
    # top ``query_expansion`` visible results, blends their vectors into the
    # query (weighted by similarity ** ``query_expansion_alpha``) and searches
    # again. 0: off. Raises class-level quality for the cost of a second search.
    query_expansion: int = 0
    query_expansion_alpha: float = 3.0

    # HTTP.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    api_token: str = field(default="", repr=False)  # never printed
    max_k: int = 100
    max_upload_bytes: int = 20_000_000
    # A client must send a request's line and headers within this many seconds
    # and its body within http_body_timeout_s, or the connection is closed
    # (half-sent requests otherwise hold a connection for ever).
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0

    # Worker web server (Faust); 0 disables it.
    worker_web_port: int = 0
    # Scheduling niceness the embedding worker adds to itself (0-19). Searches
    # and the worker compete for the same cores in `visearch run`; a niced
    # worker embeds with what queries leave (soak at 50 uploads/s + 10
    # searches/s on 2 cores, nice 10: search p95 96-148 ms instead of
    # 100-210 ms, but freshness p99 spikes to 2.5 s, so it stays off).
    worker_nice: int = 0
    # Allocations this large or larger are mmapped, so freeing them returns the
    # memory (see streams.malloc_tuning); 0 leaves glibc's dynamic threshold.
    malloc_mmap_threshold: int = 1_048_576
    # How long a Python thread may hold the GIL while another waits (CPython: 5 ms).
    # A thread back from faiss or ONNX Runtime waits up to this long for it, on
    # each of a search's calls (see streams.gil_tuning); 0 keeps Python's default.
    gil_switch_interval_ms: float = 1.0

    # Feedback loop (impressions, clicks, dwell -> CTR, time spent, labelled pairs).
    # Events older than the partition's largest event time minus this are
    # dead-lettered as late: deduplication is exact only inside this horizon.
    feedback_allowed_lateness_s: float = 3600.0
    # Events stamped this far after their record's broker timestamp are refused.
    feedback_max_future_s: float = 300.0
    # A search session closes (and yields labelled pairs) after this much
    # event time without an event.
    feedback_session_gap_s: float = 600.0
    feedback_checkpoint_interval_s: float = 10.0
    # `visearch feedback` serves /metrics and /v1/feedback on this port; the
    # API reads the summary from feedback_url (empty: aggregate in-process).
    feedback_http_port: int = 8190
    feedback_url: str = ""
    # POST /v1/interactions is the page's beacon: open unless this is set
    # (then it needs the API token like the other write endpoints).
    interactions_require_token: bool = False
    max_interactions_per_request: int = 500
    # /readyz fails while the local index shards are more than this many
    # records behind the embeddings log.
    readiness_max_lag: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``VISEARCH_*`` variables; unknown ones are an error.

        An unknown variable is almost always a typo, and a typo that silently
        falls back to a default is the kind of misconfiguration that costs a
        day in production.
        """
        env = os.environ if environ is None else environ
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in env.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX) :].lower()
            if name not in known:
                raise SettingsError(f"{key} is not a visearch setting")
            values[name] = _parse(key, raw, known[name].default)
        if values.get("kafka_bootstrap") and "embedded_broker" not in values:
            values["embedded_broker"] = False
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values that would only fail later, far from their cause."""
        for name in (
            "upload_partitions",
            "update_partitions",
            "embedding_partitions",
            "interaction_partitions",
            "replication_factor",
            "embed_batch_size",
            "decode_threads",
            "index_shards",
            "max_k",
            "max_interactions_per_request",
            "decode_memory_mb",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 1")
        for name in ("broker_port", "http_port", "shard_http_port", "feedback_http_port"):
            if not 0 < getattr(self, name) < 65536:
                raise SettingsError(f"{PREFIX}{name.upper()} must be a TCP port")
        if not self.embedded_broker and not self.kafka_bootstrap:
            raise SettingsError(
                f"{PREFIX}EMBEDDED_BROKER is off but {PREFIX}KAFKA_BOOTSTRAP is empty"
            )
        self._validate_kafka_security()
        if not (math.isfinite(self.embed_linger_s) and self.embed_linger_s > 0):
            # 0 would mean "until the batch is full" to Faust: a stalled stream.
            raise SettingsError(f"{PREFIX}EMBED_LINGER_S must be a finite number > 0")
        for name in (
            "ort_threads",
            "fetch_max_wait_ms",
            "background_fetch_max_wait_ms",
            "readiness_max_lag",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 0")
        for name in ("max_inline_bytes", "max_image_bytes", "max_image_pixels", "max_upload_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 1")
        if self.shard_id >= self.index_shards:
            raise SettingsError(f"{PREFIX}SHARD_ID must be below {PREFIX}INDEX_SHARDS")
        interval = self.gil_switch_interval_ms
        if not (math.isfinite(interval) and 0 <= interval <= 100):
            raise SettingsError(f"{PREFIX}GIL_SWITCH_INTERVAL_MS must be between 0 and 100")
        if not 0 <= self.malloc_mmap_threshold <= 32 * 1024 * 1024:
            raise SettingsError(f"{PREFIX}MALLOC_MMAP_THRESHOLD must be between 0 and 33554432")
        if not 0 <= self.worker_nice <= 19:
            raise SettingsError(f"{PREFIX}WORKER_NICE must be between 0 and 19")
        if not 0 <= self.worker_web_port < 65536:
            raise SettingsError(f"{PREFIX}WORKER_WEB_PORT must be 0 (off) or a TCP port")
        try:
            parse_networks(self.image_fetch_allow_networks)
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}IMAGE_FETCH_ALLOW_NETWORKS: {exc}") from exc
        if self.max_interactions_per_request > MAX_INTERACTIONS_PER_REQUEST:
            limit = MAX_INTERACTIONS_PER_REQUEST
            raise SettingsError(f"{PREFIX}MAX_INTERACTIONS_PER_REQUEST must be at most {limit}")
        if not 0 <= self.verify_top <= MAX_VERIFY_TOP:
            raise SettingsError(f"{PREFIX}VERIFY_TOP must be between 0 (off) and {MAX_VERIFY_TOP}")
        if not -1 <= self.verify_min_score <= 1:
            raise SettingsError(f"{PREFIX}VERIFY_MIN_SCORE must be between -1 and 1")
        if not 1 <= self.verify_scales <= MAX_VERIFY_SCALES:
            raise SettingsError(f"{PREFIX}VERIFY_SCALES must be between 1 and {MAX_VERIFY_SCALES}")
        if not 0 <= self.query_expansion <= MAX_QUERY_EXPANSION:
            raise SettingsError(
                f"{PREFIX}QUERY_EXPANSION must be between 0 (off) and {MAX_QUERY_EXPANSION}"
            )
        if not (math.isfinite(self.query_expansion_alpha) and self.query_expansion_alpha >= 0):
            raise SettingsError(f"{PREFIX}QUERY_EXPANSION_ALPHA must be a finite number >= 0")
        if self.tiles not in TILE_SCHEMES:
            raise SettingsError(f"{PREFIX}TILES must be one of {', '.join(TILE_SCHEMES)}")
        if not 0 < self.compact_ratio < 1:
            raise SettingsError(f"{PREFIX}COMPACT_RATIO must be between 0 and 1")
        for name in (
            "image_fetch_timeout_s",
            "embed_event_timeout_s",
            "http_header_timeout_s",
            "http_body_timeout_s",
            "snapshot_interval_s",
            "feedback_allowed_lateness_s",
            "feedback_max_future_s",
            "feedback_session_gap_s",
            "feedback_checkpoint_interval_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(f"{PREFIX}{name.upper()} must be a finite number > 0")
        if self.feedback_allowed_lateness_s > MAX_ALLOWED_LATENESS_S:
            raise SettingsError(
                f"{PREFIX}FEEDBACK_ALLOWED_LATENESS_S must be at most {MAX_ALLOWED_LATENESS_S} "
                "(the 1-minute windows are kept 2 hours)"
            )

    def _validate_kafka_security(self) -> None:
        """Refuse security settings that would be ignored or could never authenticate.

        Only values are checked here; the TLS files are read when a client is
        built (streams/kafka_connection.py), so settings stay buildable where
        the files are not mounted.
        """
        kafka = self.kafka
        if kafka.security_protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(
                f"{PREFIX}KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if kafka.security_protocol != "PLAINTEXT" and self.embedded_broker:
            raise SettingsError(
                f"{PREFIX}KAFKA_SECURITY_PROTOCOL={kafka.security_protocol} needs a real "
                f"cluster ({PREFIX}KAFKA_BOOTSTRAP): the embedded broker has no SASL or TLS"
            )
        if kafka.uses_sasl:
            if kafka.sasl_mechanism not in SASL_MECHANISMS:
                raise SettingsError(
                    f"{PREFIX}KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)} "
                    f"with {PREFIX}KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}"
                )
            if not (kafka.sasl_username and kafka.sasl_password):
                raise SettingsError(
                    f"{PREFIX}KAFKA_SASL_USERNAME and {PREFIX}KAFKA_SASL_PASSWORD are required "
                    f"with {PREFIX}KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}"
                )
        else:
            for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"):
                if getattr(self, name):
                    raise SettingsError(
                        f"{PREFIX}{name.upper()} is set but {PREFIX}KAFKA_SECURITY_PROTOCOL="
                        f"{kafka.security_protocol} does not use SASL"
                    )
        if not kafka.uses_tls:
            for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
                if getattr(self, name):
                    raise SettingsError(
                        f"{PREFIX}{name.upper()} is set but {PREFIX}KAFKA_SECURITY_PROTOCOL="
                        f"{kafka.security_protocol} does not use TLS"
                    )
        if kafka.ssl_keyfile and not kafka.ssl_certfile:
            raise SettingsError(
                f"{PREFIX}KAFKA_SSL_KEYFILE needs {PREFIX}KAFKA_SSL_CERTFILE (its certificate)"
            )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests, CLI flags)."""
        updated = replace(self, **changes)
        updated.validate()
        return updated

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` of the cluster in use."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return f"{self.broker_host}:{self.broker_port}"

    @property
    def kafka(self) -> KafkaConnection:
        """Everything a Kafka client needs to connect; every client is built from this.

        Each KafkaConnection field ``x`` but the bootstrap list is the setting
        ``kafka_x``, so a field added there cannot be forgotten here.
        """
        security = {
            f.name: getattr(self, f"kafka_{f.name}")
            for f in fields(KafkaConnection)
            if f.name != "bootstrap_servers"
        }
        return KafkaConnection(bootstrap_servers=self.bootstrap_servers, **security)

    @property
    def resolved_shard_id(self) -> int:
        """The shard id, from the setting or a StatefulSet-style ``$HOSTNAME`` ordinal."""
        if self.shard_id >= 0:
            return self.shard_id
        ordinal = os.environ.get("HOSTNAME", "").rsplit("-", 1)[-1]
        return int(ordinal) % self.index_shards if ordinal.isdigit() else 0

    @property
    def remote_shards(self) -> list[str]:
        return [url.strip().rstrip("/") for url in self.shard_urls.split(",") if url.strip()]

    @property
    def topics(self) -> TopicNames:
        return TopicNames.with_prefix(self.topic_prefix)

    @property
    def resolved_model_dir(self) -> Path:
        if self.model_dir:
            return Path(self.model_dir)
        return self.data_dir / "models" / "efficientnet-lite0"

    @property
    def image_store_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def worker_progress_path(self) -> Path:
        """The embedding worker's progress beacon (streams/progress.py)."""
        return self.data_dir / "worker" / "progress.json"

    @property
    def image_root_dirs(self) -> list[Path]:
        """The directories of ``image_roots``."""
        return [Path(root.strip()) for root in self.image_roots.split(",") if root.strip()]


def _parse(key: str, raw: str, default: Any) -> Any:
    """Convert ``raw`` to the type of the field's default, with a precise error."""
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true/false")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{key}={raw!r}: {exc}") from exc
