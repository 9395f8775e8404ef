"""bench/peers.py end to end on the systems every install has (visearch and raw
faiss, each in its own worker process): every phase runs, writes take effect,
and a peer that is not installed is reported, not dropped."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.peers import installed


@pytest.mark.timeout(300)
def test_peers_measures_visearch_against_the_exact_floor():
    systems = ["visearch", "faiss"]
    peers = ("milvus", "chroma", "lancedb", "usearch")
    missing = next((s for s in peers if not installed(s)), None)
    if missing:
        systems.append(missing)
    args = ["--n", "3000", "--data", "mixture", "--queries", "40", "--writes", "15"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.peers", *args, "--systems", ",".join(systems)],
        capture_output=True,
        text=True,
        timeout=280,
        check=True,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    by = {(line["system"], line["metric"]): line for line in lines}
    for system in ("visearch", "faiss"):
        for metric in ("search_p95_ms", "insert_found_p99_ms", "delete_gone_p99_ms"):
            assert by[(system, metric)]["value"] > 0
        assert by[(system, "search_p95_ms")]["queries"] == 40
        rounds = by[(system, "search_p95_ms")]["search_p95_rounds_ms"]
        assert len(rounds) == 3  # the reported p95 is the median round's
        assert by[(system, "search_p95_ms")]["value"] == pytest.approx(sorted(rounds)[1], abs=1e-3)
        assert by[(system, "search_p95_ms")]["insert_missed"] == 0
        assert by[(system, "search_p95_ms")]["delete_missed"] == 0
        assert 500 < by[(system, "bytes_per_vector")]["value"] < 20_000
    assert by[("faiss", "recall_at_10")]["value"] == 1.0
    assert by[("visearch", "recall_at_10")]["value"] == 1.0  # 3,000 vectors: still exact
    # The baseline of each metric is raw faiss measured in the same run.
    visearch_p95 = by[("visearch", "search_p95_ms")]
    assert visearch_p95["baseline"] == by[("faiss", "search_p95_ms")]["value"]
    if missing:
        assert "not installed" in by[(missing, "error")]["error"]
    assert "Fairness notes" in done.stderr
