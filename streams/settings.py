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

from encoders.precision import MODES as PRECISION_MODES
from encoders.tiles import TILE_SCHEMES
from index.defaults import DEFAULT_ANN_THRESHOLD, DEFAULT_FACTORY, DEFAULT_MIN_SCANNED_ROWS
from streams.errors import VisearchError
from streams.kafka_connection import SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConnection
from streams.remote_fetch import RemoteFetch, parse_networks

PREFIX = "VISEARCH_"
# Shortest window retention (feedback/windows.py) minus one window.
MAX_ALLOWED_LATENESS_S = 2 * 3600 - 60
MAX_VERIFY_TOP = 500  # pixel-matching more candidates than this costs seconds a query
MAX_VERIFY_SCALES = 15
MAX_QUERY_EXPANSION = 50
WINDOW_SCHEMES = ("none", "centre", "grid")  # index.query_windows.WINDOW_SCHEMES
# The most interactions one request may carry, whatever the setting: the API
# refuses longer lists before validating a single element.
MAX_INTERACTIONS_PER_REQUEST = 10_000  # index.query_expansion.MAX_NEIGHBOURS (no index import here)


class SettingsError(VisearchError, ValueError):
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
    """`host:port,...` of a real Kafka cluster; setting it turns the embedded broker off"""
    embedded_broker: bool = True
    """start the embedded Tansu broker"""
    broker_host: str = "127.0.0.1"
    """embedded broker address"""
    broker_port: int = 19092
    """embedded broker port"""
    topic_prefix: str = "visearch"
    """topics are `<prefix>.image-uploads`, `.image-updates`, `.embeddings`, `.interactions`,
    `.labeled-pairs`, `.dead-letter`
    """
    upload_partitions: int = 4
    """partitions of the uploads topic"""
    update_partitions: int = 4
    """partitions of the updates topic"""
    embedding_partitions: int = 8
    """partitions of the embeddings topic (= index partitions)"""
    interaction_partitions: int = 4
    """partitions of the interactions and labelled-pairs topics"""
    replication_factor: int = 1
    """replication factor for created topics (3 in production)"""
    # aiokafka's fetch wait; Faust hard-codes 1500 ms, which costs ~400 ms of
    # freshness per hop on the embedded broker (streams/transport.py).
    fetch_max_wait_ms: int = 20
    """consumer fetch wait (Faust hard-codes 1500 ms; see `streams/transport.py`)"""
    # The same wait for consumers whose delay no user sees: the dead-letter
    # monitor, the model watcher and the feedback aggregator (CTR goal: 5 s).
    # Each idle kafka-python consumer at 20 ms fetches 50 times a second; in
    # the soak the API process's three of them took ~30 % of a core (py-spy)
    # and the broker as much again to answer them.
    background_fetch_max_wait_ms: int = 250
    """the same for consumers no user waits on (dead-letter monitor, model watcher,
    feedback aggregator): each idle consumer at 20 ms costs the process and the broker a few
    % of a core
    """
    # streams/fetch_backoff.py: the embedded broker holds each fetch for its whole
    # wait, so an idle consumer's waits grow to these and drop back at the first
    # record; the first record after an idle spell waits at most this per hop.
    idle_fetch_max_wait_ms: int = 500
    """fetch wait that the embedding worker's and the index shards' consumers grow to while
    their topic is idle (doubling after each empty fetch, back to VISEARCH_FETCH_MAX_WAIT_MS at
    the first record): an idle stack then costs almost no CPU, and the first upload after an
    idle spell waits at most this per hop
    """
    background_idle_fetch_max_wait_ms: int = 5000
    """the same for the background consumers (dead-letter monitor, feedback aggregator, model
    watchers): an idle worker learns of a model deploy within this wait (uploads it embeds
    before that reach the candidate through the backfill)
    """
    app_id: str = "visearch"
    """Faust app id = consumer group of the embedding workers"""
    # How clients authenticate to a real cluster (streams/kafka_connection.py
    # maps these for kafka-python and Faust). File paths are str, not Path:
    # Path("") is ".", and empty must mean "not set".
    kafka_security_protocol: str = "PLAINTEXT"
    """`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`, for every Kafka client (kafka-python and
    Faust alike); anything but `PLAINTEXT` needs a real cluster
    """
    kafka_sasl_mechanism: str = ""
    """with `SASL_*`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (required)"""
    kafka_sasl_username: str = ""
    """with `SASL_*`: the user (required)"""
    kafka_sasl_password: str = field(default="", repr=False)  # never printed
    """with `SASL_*`: the password (required; never printed or logged)"""
    kafka_ssl_cafile: str = ""
    """with `SSL`/`SASL_SSL`: PEM CA bundle that signed the brokers' certificates; empty trusts the
    system CAs
    """
    kafka_ssl_certfile: str = ""
    """with `SSL`/`SASL_SSL`: PEM client certificate for mutual TLS (may hold the key too)"""
    kafka_ssl_keyfile: str = ""
    """its unencrypted PEM private key, when not in the certificate file"""

    # Paths.
    data_dir: Path = Path("data")
    """image store, model, logs"""
    # Empty means <data_dir>/models/efficientnet-lite0. A str, not a Path:
    # Path("") is ".", which would silently mean "the current directory".
    model_dir: str = ""
    """exported model directory"""
    model_precision: str = "auto"
    """`visearch run`: `auto` serves the int8 copy of the model (made on first start) when its
    vectors agree with fp32 on this CPU (mean cosine >= 0.98, each >= 0.95), else fp32; `fp32`;
    `int8` (even when the check fails)
    """

    # Embedding.
    embed_batch_size: int = 16
    """embedding micro-batch size"""
    # Faust's take() waits this long after each batch for the next one to
    # fill, even when events are already queued: it is the latency floor of the
    # embedding hop. 2 ms lets batches form from whatever arrived while the
    # previous one was embedded (freshness p50 at 100 uploads/s on 2 cores:
    # 40 ms, against 103-125 ms with 20 ms) and costs ~6 % of a core when idle.
    embed_linger_s: float = 0.002
    """how long the embedding agent waits after each micro-batch for the next to fill (> 0; Faust
    waits this long even when events are queued)
    """
    # Tile vectors indexed beside each global vector for crop queries:
    # "none" (1 encoder pass per image), "quadrants" (4 quadrants + centre,
    # 6 passes: ~3x crop recall@1, 1/6 of the ingest throughput) or "thirds"
    # (4x4 overlapping third-size tiles, 17 passes: ~4.4x, 1/17).
    tiles: str = "none"
    """`quadrants` also indexes 4 quadrant + 1 centre tiles per image for crop queries (6 encoder
    passes per upload); `thirds` 16 overlapping third-size tiles (17 passes; crop recall@1 0.495
    vs 0.333)
    """
    # One intra-op thread: on 2 vCPUs two threads cost the int8 model 8.4 ms of CPU
    # for one input where one thread costs 4.2, and were slower in wall time too
    # (5.2 against 4.2 ms); only a batch of several inputs gains from two (5 query
    # views: 19 ms against 23, for 34 ms of CPU against 23). Freshness at 50
    # uploads/s was the same (p50 18.6 ms against 17.6). A machine with idle cores
    # that wants the lowest latency per batch sets 0 (ONNX Runtime's default: a
    # thread per core).
    ort_threads: int = 1
    """ONNX Runtime intra-op threads per encoder (0 = ONNX Runtime's default, one per core;
    1 costs the least CPU per input)"""
    # ONNX Runtime's intra-op threads busy-wait between runs by default. On a
    # machine shared with the broker, the API and the shards that spinning
    # steals the cores the other processes need (freshness p50 at 100 uploads/s
    # on 2 cores: p50 128 ms without spinning, 164-250 ms with). Turn it on
    # for a machine that only embeds.
    ort_spin: bool = False
    """let ONNX Runtime's idle intra-op threads busy-wait (faster on a machine that only embeds,
    slower beside the broker and API)
    """
    # Threads that read, decode and preprocess uploads beside the inference thread.
    decode_threads: int = 2
    """threads that read, decode and preprocess uploads beside the inference thread"""
    max_inline_bytes: int = 750_000
    """largest image carried inline in an event"""
    max_image_bytes: int = 20_000_000
    """largest image accepted anywhere"""
    # Inline uploads that a backend published straight to Kafka never pass
    # through the API's store: without a copy they have no thumbnail, and the
    # embedded broker (in memory) forgets them at a restart.
    keep_inline_uploads: bool = True
    """the worker keeps the bytes of inline (`image_b64`) uploads published straight to Kafka
    in the image store, so they have thumbnails and survive a restart of the embedded broker;
    their updates from the log (delete, private, flag, tags) are applied to the copy
    """
    max_image_pixels: int = 40_000_000
    """decompression-bomb limit"""
    # Memory that all decodes of one process may hold at once (encoders/preprocess.py,
    # DecodeBudget): a decode reserves (bytes per stored pixel + 1) x pixels,
    # i.e. 5 for RGB(A) PNG, 3 for 16-bit grey, 2 for 8-bit grey or palette;
    # JPEGs are decoded at 1/2 to 1/8 scale first. 96 MiB admits a 19-megapixel
    # RGB PNG or a 32-megapixel 16-bit one, and keeps peak decode memory under
    # 100 MB whatever the number of concurrent requests; bigger images are refused.
    decode_memory_mb: int = 96
    """memory all image decodes of one process may hold at once: a decode reserves (bytes per
    stored pixel + 1) x pixels (5 for RGB(A) PNG, 3 for 16-bit grey, 2 for 8-bit grey or
    palette; JPEGs are decoded at 1/2 to 1/8 scale first); a bigger image is refused
    (`too_many_pixels`), others wait their turn (`decoder_busy` after 10 s)
    """
    # One upload may take this long to read, decode and preprocess in the
    # worker before it is dead-lettered (``prepare_timeout``) and its batch
    # goes on without it.
    embed_event_timeout_s: float = 10.0
    """an upload that takes longer to read, decode and preprocess is dead-lettered as
    `prepare_timeout`; an http(s) fetch still running 0.2 s after the rest of its batch finishes
    on its own, so it never holds the batch
    """
    # http(s):// image URIs in upload events: one deadline for the whole fetch,
    # and loopback/private/link-local addresses refused unless allowed (SSRF).
    image_fetch_timeout_s: float = 5.0
    """deadline for fetching an `http(s)://` image URI (resolve, connect, headers and body
    together)
    """
    image_fetch_allow_private: bool = False
    """allow `http(s)://` image URIs that resolve to loopback, private, link-local or reserved
    addresses (refused by default: SSRF guard)
    """
    # Networks (comma-separated CIDRs) that http(s) image URIs may reach besides
    # global addresses, e.g. an internal image server, without allowing every
    # private address. IPv6 forms that embed an IPv4 address are judged by it.
    image_fetch_allow_networks: str = ""
    """comma-separated networks (CIDR) `http(s)://` image URIs may reach besides global addresses,
    e.g. an internal image server, without allowing every private address; IPv6 forms that embed
    an IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible/-mapped) are judged by that address
    """
    # Directories (comma-separated) whose files upload events may name as
    # file:// URIs besides the image store, e.g. a volume the backends share.
    # In the store itself an event may only name its own image's file.
    image_roots: str = ""
    """comma-separated directories whose files upload events may name as `file://` URIs besides the
    image store (in the store an event may only name its own image's file)
    """

    # Index.
    # A shard's partitions search exactly (Flat) until the shard holds
    # ann_threshold live vectors, then a background re-plan trains one index of
    # this faiss factory and rebuilds every partition into a copy of it
    # (index/ann_plan.py). IVF over HNSW: at 1M vectors of real-image
    # embeddings IVF1024 with nprobe 16 reached recall@10 0.978 at p95 2.1 ms,
    # HNSW32 0.82 at efSearch 64 and 0.86 at 128 (bench/index.py); IVF also
    # needs no graph repair after deletes, and copies of one IVF share their
    # cells, so a query is quantized once per shard.
    index_factory: str = DEFAULT_FACTORY
    """faiss factory string a shard's partitions move to past `ANN_THRESHOLD`; `{nlist}` is
    filled with the power of two nearest 4·√n for the shard's n live vectors, retrained as it
    grows (`IVF{nlist},Flat`, `IVF1024,Flat`, `HNSW32`, `IVF1024,PQ32`, ...)
    """
    index_shards: int = 1
    """index shards (each owns partitions `p mod S = k`)"""
    ann_threshold: int = DEFAULT_ANN_THRESHOLD
    """live vectors of a shard (all its partitions together) at which they move from exact
    (Flat) search to the ANN factory, in the background
    """
    ef_search: int = 64
    """HNSW efSearch, passed per search call"""
    nprobe: int = 16
    """IVF nprobe, passed per search call: the lists each search probes at least"""
    min_scanned_rows: int = DEFAULT_MIN_SCANNED_ROWS
    """rows of a shard an IVF search scans at least: while its lists are short (nlist grows as
    4·√n, so a shard just past `ANN_THRESHOLD` has ~40 rows a list) nprobe is raised to reach
    it; at 20,000 photo embeddings recall@10 0.942 at nprobe 16, 0.959 with this floor (0: off)
    """
    # Retired rows (deleted or replaced) past this share of a partition trigger
    # a background compaction.
    compact_ratio: float = 0.25
    """share of retired rows (deleted or replaced) that triggers a background compaction"""
    snapshot_interval_s: float = 30.0
    """how often a shard snapshots changed partitions (also on shutdown)"""
    # Separate shard processes (`visearch shard`): this process's shard id
    # (-1: the ordinal at the end of $HOSTNAME, as in a StatefulSet, else 0),
    # its HTTP port, and for the search API the shard URLs to scatter to
    # (comma-separated; empty: shards run inside the API process).
    shard_id: int = -1
    """for `visearch shard`: this shard's id (-1: the ordinal ending `$HOSTNAME`, as in a
    StatefulSet)
    """
    shard_http_port: int = 8180
    """for `visearch shard`: its HTTP port"""
    shard_search_threads: int = 0
    """for `visearch shard`: 0 answers each search on the server's event loop (cheapest: the hop
    to a worker thread cost ~0.45 ms of a 1.1 ms shard request on 2 cores); N > 0 runs up to N
    searches at once on N threads (faiss releases the GIL: a shard with several cores answers
    concurrent queries in parallel)
    """
    shard_urls: str = ""
    """for the API: comma-separated shards to scatter to, each its copies' URLs separated by `|`
    (`http://s0a|http://s0b,http://s1a|http://s1b`); empty runs the shards in the API process
    """
    search_deadline_ms: int = 1000
    """one deadline per scatter to the shards: a shard with no answering copy by then is left
    out (a partial answer) or, with `search_strict`, fails the search (HTTP 503)
    """
    search_strict: bool = False
    """answer 503 instead of a partial answer when a shard has no copy answering in time"""
    shard_unhealthy_s: float = 5.0
    """a shard copy that failed is skipped for this long (tried anyway when no copy is healthy)"""
    recall_sample: float = 0.01
    """share of each shard's live queries searched again exactly in the background, for the
    online recall@10 (`visearch_shard_recall_at_10`); 0 turns it off
    """
    # Results whose mutual cosine similarity reaches this are near-duplicates:
    # only the best-ranked one is kept. Above 1 disables the collapse.
    dedup_threshold: float = 0.96
    """results at least this similar to a better one are collapsed as near-duplicates (> 1
    disables); set on the pretrained model's similarity scale, a trained model translates it
    with the scale in its metadata
    """
    # Crop queries: the top ``verify_top`` hits of a search by image are
    # checked for a pixel match with the query (index/crop_verify.py) and the
    # matches move first. 0: off. A match needs a normalised cross-correlation
    # of ``verify_min_score``; ``verify_scales`` > 1 also tries rescaled crops.
    verify_top: int = 100
    """crop verification: the top N hits of a search by image are pixel-matched against the query
    and matches move first (0: off). On real photos the source of a hard crop (3-15 % of the
    area) is in the global vector's top 100 for 95 % of crops: verifying them takes crop
    recall@1 from 0.52 to 0.94 (photo tune split) with one encoder pass per indexed image
    """
    verify_min_score: float = 0.9
    """normalised cross-correlation a candidate needs to count as the crop's source"""
    verify_scales: int = 1
    """sizes tried per candidate: 1 = the candidate's own resolution; more also finds crops
    rescaled up to 1.5x either way (slower, more false matches)
    """
    # Query expansion (index/query_expansion.py): each search first finds its
    # top ``query_expansion`` visible results, blends their vectors into the
    # query (weighted by similarity ** ``query_expansion_alpha``) and searches
    # again. 0: off. Raises class-level quality for the cost of a second search.
    query_expansion: int = 0
    """query expansion: each search first finds its top K visible results, blends their vectors
    into the query (weighted by similarity ** alpha) and searches again; result scores are then
    similarities to the expanded query (0: off; 3: Fashion-MNIST mAP 0.560 → 0.581, see Query
    expansion)
    """
    query_expansion_alpha: float = 3.0
    """how sharply query expansion weights neighbours by similarity (0: plain average)"""
    query_windows: str = "centre"
    """query-side multi-crop (index/query_windows.py): when crop verification confirmed
    nothing and the best score is below VISEARCH_QUERY_WINDOWS_BELOW, the search is repeated
    with windows of the query and each image keeps its best score: `centre` (the middle 60 % and
    80 %: 2 more encoder passes), `grid` (9 half-size windows) or `none`; finds screenshots and
    padded copies (photo tune split, screenshots recall@1 0.35 -> 0.80 with `centre`)
    """
    query_turns: bool = True
    """an unsure search (as for VISEARCH_QUERY_WINDOWS) is also tried with the query turned by
    90, 180 and 270 degrees (3 more encoder passes): finds photos shown sideways
    """
    query_windows_below: float = 0.75
    """a best similarity below this (on the pretrained model's scale, translated for a trained
    model) makes a search unsure enough to try the query windows and turns
    """
    query_windows_margin: float = 0.05
    """the windows' and turns' results count only when one beats the whole query's best score
    by this much (a window that is mostly a pasted patch of another picture finds that picture)
    """

    # HTTP.
    http_host: str = "127.0.0.1"
    """search API address"""
    http_port: int = 8080
    """search API port"""
    api_token: str = field(default="", repr=False)  # never printed
    """when set, write endpoints need `Authorization: Bearer <token>`"""
    max_k: int = 100
    """largest `k` a search may ask for"""
    max_upload_bytes: int = 20_000_000
    """largest HTTP upload"""
    # A client must send a request's line and headers within this many seconds
    # and its body within http_body_timeout_s, or the connection is closed
    # (half-sent requests otherwise hold a connection for ever).
    http_header_timeout_s: float = 10.0
    """a client must send a request's line and headers within this, or the connection is closed"""
    http_body_timeout_s: float = 30.0
    """... and its body within this (408 otherwise)"""

    # Worker web server (Faust); 0 disables it.
    worker_web_port: int = 0
    """Faust worker web port (0 = off)"""
    # Scheduling niceness the embedding worker adds to itself (0-19). Searches
    # and the worker compete for the same cores in `visearch run`; a niced
    # worker embeds with what queries leave (soak at 50 uploads/s + 10
    # searches/s on 2 cores, nice 10: search p95 96-148 ms instead of
    # 100-210 ms, but freshness p99 spikes to 2.5 s, so it stays off).
    worker_nice: int = 0
    """niceness the embedding worker adds to itself (0-19): on a machine shared with the search
    API, queries get the CPU first
    """
    # Allocations this large or larger are mmapped, so freeing them returns the
    # memory (see streams.malloc_tuning); 0 leaves glibc's dynamic threshold.
    malloc_mmap_threshold: int = 1_048_576
    """allocations this large are mmapped so that freeing them returns the memory (glibc; keeps RSS
    flat while partitions compact); 0 = glibc's dynamic threshold
    """
    # How long a Python thread may hold the GIL while another waits (CPython: 5 ms).
    # A thread back from faiss or ONNX Runtime waits up to this long for it, on
    # each of a search's calls (see streams.gil_tuning); 0 keeps Python's default.
    gil_switch_interval_ms: float = 1.0
    """how long a Python thread may keep the GIL while another waits (CPython's default: 5 ms); a
    search's thread waits for it after each faiss / ONNX Runtime call (`streams/gil_tuning.py`);
    0 = Python's default
    """

    # Feedback loop (impressions, clicks, dwell -> CTR, time spent, labelled pairs).
    # Events older than the partition's largest event time minus this are
    # dead-lettered as late: deduplication is exact only inside this horizon.
    feedback_allowed_lateness_s: float = 3600.0
    """interactions older than the partition's latest event time minus this are dead-lettered as
    `late_event` (max 7140: the 1-minute windows are kept 2 h)
    """
    # Events stamped this far after their record's broker timestamp are refused.
    feedback_max_future_s: float = 300.0
    """interactions stamped this far after their record's broker time are dead-lettered as
    `future_timestamp`
    """
    # A search session closes (and yields labelled pairs) after this much
    # event time without an event.
    feedback_session_gap_s: float = 600.0
    """a search session closes, and yields labelled pairs, after this much event time without
    events
    """
    feedback_checkpoint_interval_s: float = 10.0
    """how often the feedback aggregator checkpoints its state with its offsets (also on shutdown)
    """
    # `visearch feedback` serves /metrics and /v1/feedback on this port; the
    # API reads the summary from feedback_url (empty: aggregate in-process).
    feedback_http_port: int = 8190
    """for `visearch feedback`: port of its `/metrics` and `/v1/feedback`"""
    feedback_url: str = ""
    """for the API: URL of a `visearch feedback` process; empty aggregates in the API process"""
    # POST /v1/interactions is the page's beacon: open unless this is set
    # (then it needs the API token like the other write endpoints).
    interactions_require_token: bool = False
    """make `POST /v1/interactions` (the page's beacon) require the API token too"""
    max_interactions_per_request: int = 500
    """largest batch `POST /v1/interactions` accepts"""
    # /readyz fails while the local index shards are more than this many
    # records behind the embeddings log.
    readiness_max_lag: int = 1000
    """`/readyz` answers 503 while the local index shards are more than this many records behind
    the embeddings log
    """

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
        self._validate_counts()
        self._validate_connection()
        self._validate_ingest()
        self._validate_search()

    def _validate_counts(self) -> None:
        """Partitions, threads, sizes and limits that must be positive; ports."""
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
        for name in (
            "ort_threads",
            "fetch_max_wait_ms",
            "background_fetch_max_wait_ms",
            "idle_fetch_max_wait_ms",
            "background_idle_fetch_max_wait_ms",
            "readiness_max_lag",
            "min_scanned_rows",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 0")
        for name in ("max_inline_bytes", "max_image_bytes", "max_image_pixels", "max_upload_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 1")

    def _validate_connection(self) -> None:
        """The broker, its security, and which shard this process is."""
        if not self.embedded_broker and not self.kafka_bootstrap:
            raise SettingsError(
                f"{PREFIX}EMBEDDED_BROKER is off but {PREFIX}KAFKA_BOOTSTRAP is empty"
            )
        self._validate_kafka_security()
        if self.shard_id >= self.index_shards:
            raise SettingsError(f"{PREFIX}SHARD_ID must be below {PREFIX}INDEX_SHARDS")

    def _validate_ingest(self) -> None:
        """Batching, the process tuning knobs, fetch networks, model, tiles, durations."""
        if not (math.isfinite(self.embed_linger_s) and self.embed_linger_s > 0):
            # 0 would mean "until the batch is full" to Faust: a stalled stream.
            raise SettingsError(f"{PREFIX}EMBED_LINGER_S must be a finite number > 0")
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
        if self.model_precision not in PRECISION_MODES:
            raise SettingsError(
                f"{PREFIX}MODEL_PRECISION must be one of {', '.join(PRECISION_MODES)}"
            )
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

    def _validate_search(self) -> None:
        """Request limits, re-ranking, query views, the scatter and its deadline."""
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
        if self.query_windows not in WINDOW_SCHEMES:
            raise SettingsError(f"{PREFIX}QUERY_WINDOWS must be one of {', '.join(WINDOW_SCHEMES)}")
        if not (math.isfinite(self.query_windows_below) and -1 <= self.query_windows_below <= 1):
            raise SettingsError(f"{PREFIX}QUERY_WINDOWS_BELOW must be between -1 and 1")
        if not (math.isfinite(self.query_windows_margin) and 0 <= self.query_windows_margin <= 1):
            raise SettingsError(f"{PREFIX}QUERY_WINDOWS_MARGIN must be between 0 and 1")
        if not (math.isfinite(self.query_expansion_alpha) and self.query_expansion_alpha >= 0):
            raise SettingsError(f"{PREFIX}QUERY_EXPANSION_ALPHA must be a finite number >= 0")
        if not (math.isfinite(self.recall_sample) and 0 <= self.recall_sample <= 1):
            raise SettingsError(f"{PREFIX}RECALL_SAMPLE must be between 0 and 1")
        if not 0 <= self.shard_search_threads <= 256:
            raise SettingsError(f"{PREFIX}SHARD_SEARCH_THREADS must be 0..256")
        if self.search_deadline_ms < 1:
            raise SettingsError(f"{PREFIX}SEARCH_DEADLINE_MS must be >= 1")
        if not (math.isfinite(self.shard_unhealthy_s) and self.shard_unhealthy_s >= 0):
            raise SettingsError(f"{PREFIX}SHARD_UNHEALTHY_S must be a finite number >= 0")
        if any(not copies for copies in self.remote_shards):
            raise SettingsError(f"{PREFIX}SHARD_URLS has a shard without a copy URL")

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
    def remote_shards(self) -> list[list[str]]:
        """Each remote shard's copies' URLs, from ``shard_urls``."""
        return [
            [url.strip().rstrip("/") for url in shard.split("|") if url.strip()]
            for shard in self.shard_urls.split(",")
            if shard.strip()
        ]

    @property
    def topics(self) -> TopicNames:
        return TopicNames.with_prefix(self.topic_prefix)

    @property
    def resolved_model_dir(self) -> Path:
        if self.model_dir:
            return Path(self.model_dir)
        return self.data_dir / "models" / "efficientnet-lite0"

    def fetch_policy(self) -> RemoteFetch:
        """How http(s) image URIs are fetched (``VISEARCH_IMAGE_FETCH_*``): by the
        workers for uploads, by the API for thumbnails of such images."""
        return RemoteFetch(
            self.image_fetch_timeout_s,
            self.image_fetch_allow_private,
            parse_networks(self.image_fetch_allow_networks),
        )

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
