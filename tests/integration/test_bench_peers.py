"""bench/peers.py end to end on the systems every install has (visearch and raw
faiss, each in its own worker process): every phase runs, writes take effect,
and a peer that is not installed is reported, not dropped."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.peers import (
    SEARCH_ROUNDS,
    Worker,
    installed,
    make_data,
    run_systems,
)
from bench.support import process_state


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
        assert len(rounds) == SEARCH_ROUNDS  # the reported p95 is the median round's
        assert by[(system, "search_p95_ms")]["value"] == pytest.approx(
            sorted(rounds)[len(rounds) // 2], abs=1e-3
        )
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


@pytest.mark.timeout(120)
def test_a_worker_is_stopped_between_requests(tmp_path):
    """Systems take turns: a loaded worker waits stopped (no background thread of one
    system runs while another is timed) and answers each round when resumed."""
    data = make_data("mixture", 2000, 20, 5, seed=1)
    for name, array in data.items():
        np.save(tmp_path / f"{name}.npy", array)
    worker = Worker("faiss", tmp_path, budget_s=30.0, timeout_s=60.0)
    try:
        loaded = worker.answer()
        assert loaded is not None and loaded["load_per_s"] > 0
        assert process_state(worker.process.pid) == "T"
        first = worker.answer("round")
        assert first is not None and first["asked"] == 20
        assert first["found"] == 20 * 10  # exact: every true neighbour
        assert process_state(worker.process.pid) == "T"
        written = worker.answer("writes")
        assert written is not None and written["insert_found_missed"] == 0
    finally:
        worker.close()
    assert worker.process.returncode is not None


@pytest.mark.timeout(60)
def test_a_worker_that_cannot_load_is_reported_with_its_reason(tmp_path):
    results = run_systems(["faiss"], tmp_path, budget_s=10.0, timeout_s=30.0)  # no data there
    assert "base.npy" in results["faiss"]["error"]


def test_a_worker_answers_alone_on_its_stdout():
    """What a peer library prints (Python or a C library writing to fd 1) goes to the
    worker's stderr, not into the answers its parent reads line by line."""
    script = (
        "import os\n"
        "from bench.peers import reply, take_stdout\n"
        "answers = take_stdout()\n"
        "print('a library says hello', flush=True)\n"
        "os.write(1, b'and so does its C part\\n')\n"
        "reply(answers, {'round': 1})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert [json.loads(line) for line in done.stdout.splitlines()] == [{"round": 1}]
    assert "a library says hello" in done.stderr and "its C part" in done.stderr
