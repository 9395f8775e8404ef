"""bench/scatter.py's measurement on real shard processes, at its smallest: both fan-outs
are timed over the same shards, and the CPU each search costs is counted in the shard
processes as well as the caller (on two cores that CPU bounds what parallel can gain)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from bench.scatter import measure, mixture, publish_vectors
from bench.support import ShardProcess, shard_processes, wait_shard_images
from encoders.model_dir import read_metadata
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from streams.topics import ensure_topics
from visearch.catalog.corpus import DEMO_CORPUS
from visearch.local.stack import isolated_settings
from visearch.models.serving import ensure_exported

VECTORS = 400


@pytest.mark.timeout(240)
def test_scatter_bench_times_both_fan_outs_and_counts_every_process_cpu(tmp_path: Path) -> None:
    settings = isolated_settings(Settings(), tmp_path / "api", f"bs-{uuid.uuid4().hex[:6]}")
    ensure_exported(settings.resolved_model_dir, DEMO_CORPUS)
    model = read_metadata(settings.resolved_model_dir)  # the shards index its vectors
    vectors = mixture(VECTORS + 8, model.dim, np.random.default_rng(0))
    broker = EmbeddedBroker(settings.broker_host, settings.broker_port).start()
    try:
        ensure_topics(settings)
        publish_vectors(settings, vectors[:VECTORS], model.version)
        samples = measure(settings, tmp_path, 2, vectors[VECTORS:], VECTORS)
    finally:
        broker.stop()
    assert len(samples["parallel"]) == len(samples["sequential"]) == 8
    assert all(ms > 0 for ms in samples["parallel"] + samples["sequential"])
    # 8 searches, each asking 2 shard processes: the shards' CPU is counted too, so a
    # search costs more than a scan of 200 vectors (a few microseconds)
    for name in ("cpu_ms_per_search", "sequential_cpu_ms_per_search"):
        assert samples[name][0] > 0.05, samples[name]


@pytest.mark.timeout(120)
def test_shard_process_cpu_seconds_grow_while_it_works(tmp_path: Path) -> None:
    settings = isolated_settings(Settings(), tmp_path / "api", f"bc-{uuid.uuid4().hex[:6]}")
    broker = EmbeddedBroker(settings.broker_host, settings.broker_port).start()
    try:
        ensure_topics(settings)
        shard = ShardProcess(settings.with_overrides(index_shards=1), 0, 0, tmp_path)
        assert shard.cpu_seconds() == 0.0  # not started
        with shard_processes([[shard]]) as processes:
            wait_shard_images(processes, 0)
            assert processes[0][0].cpu_seconds() > 0  # start-up: imports, faiss, the API
    finally:
        broker.stop()
