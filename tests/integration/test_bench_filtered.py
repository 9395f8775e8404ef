"""bench/filtered.py end to end at its smallest size (100k): every kind and selectivity is measured,
filtered searches keep their recall and never answer short, post-filtering does, and
the lines carry the metric names and tags the issue asks for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.filtered import KINDS, ROUNDS, SELECTIVITIES


@pytest.mark.timeout(300)
def test_filtered_bench_measures_every_selectivity_against_its_baselines():
    done = subprocess.run(
        [sys.executable, "-m", "bench.filtered", "--n", "100000", "--queries", "40"],
        capture_output=True,
        text=True,
        timeout=280,
        check=True,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    unfiltered = [line for line in lines if line["metric"] == "search_p95_ms"]
    assert len(unfiltered) == 1 and unfiltered[0]["index"].startswith("IVF")
    # the warm-up's selective filters have the shard copy its rows into shared arrays:
    # 8-bit codes (a byte a dimension), a flag, an upload time and the posting lists
    extra = [line for line in lines if line["metric"] == "filter_rows_bytes_per_vector"]
    assert len(extra) == 1 and 256 < extra[0]["value"] < 256 + 1 + 2 * 8 + 5 * 8
    sets = [line for line in lines if "kind" in line]
    by = {(line["kind"], line["selectivity"], line["metric"]): line for line in sets}
    for kind in KINDS:
        for selectivity in SELECTIVITIES:
            assert by[(kind, selectivity, "filtered_recall_at_10")]["value"] >= 0.95
            assert by[(kind, selectivity, "filtered_short_share")]["value"] == 0
            p95 = by[(kind, selectivity, "filtered_p95_ms")]
            # the unfiltered p95 timed in turn with this filter set, round by round
            assert p95["value"] > 0 and p95["baseline"] > 0 and p95["ratio"] is not None
            for key, reported in (("filtered", p95["value"]), ("baseline", p95["baseline"])):
                rounds = sorted(p95[f"{key}_p95_rounds_ms"])
                assert len(rounds) == ROUNDS and reported == pytest.approx(rounds[ROUNDS // 2])
    # at 0.1 % post-filtering the unfiltered top 100 finds almost nothing
    for kind in KINDS:
        assert by[(kind, 0.001, "postfilter_short_share")]["value"] > 0.5
