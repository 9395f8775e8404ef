"""Privacy under churn at scale: search probes against images being hidden and shown.

A private stack (embedded broker, Faust worker, in-process shard) and the
real HTTP API in process (FastAPI's TestClient). One thread changes real
photos through the API as fast as it is acknowledged: upload, private,
public, flag, unflag, delete, re-upload. Probe threads search the API's own
search service with query embeddings computed once (so probes are fast and
land in the milliseconds between a 202 and the index applying the update).
Every probe runs twice, back to back: through the service with the image
store's denylist (what the API serves) and through the same shards without
it (the index alone, the baseline). A leak is a result that was hidden for
the whole search for sure (:mod:`bench.privacy_audit`); the metric is
leaks = 0, the baseline the index alone's count on the same churn.

    python -m bench.privacy            # 100,000 probes
    python -m bench.privacy --quick    # 10,000 probes
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from bench.output import bench_parser, emit, machine
from bench.privacy_audit import ApiChurn
from bench.support import percentile
from encoders.preprocess import preprocess
from index.search import SearchService
from streams.settings import Settings
from visearch.api.app import create_api
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.catalog.hidden import ACTIONS
from visearch.local.stack import LocalStack, isolated_settings
from visearch.models.serving import ensure_exported

BENCH = "privacy"
K = 24


@dataclass
class Tally:
    """Probes of one search path (with or without the denylist).

    Judged only once the churn has stopped: a change still in flight when a
    probe ends, sent before it ended, may excuse what it returned.
    """

    probes: list[tuple[list[str], float, float]] = field(default_factory=list)
    leaks: int = 0
    exposures: int = 0

    def judge(self, churn: ApiChurn) -> None:
        for ids, began, ended in self.probes:
            self.leaks += len(churn.audit.leaks(ids, began, ended))
            self.exposures += churn.audit.exposures(began, ended)

    def search_ms(self, q: float) -> float:
        return percentile([(e - b) * 1000 for _, b, e in self.probes], q)


def _timed(search: SearchService, query: np.ndarray) -> tuple[list[str], float, float]:
    began = time.monotonic()
    hits = search.search_vector(query, K)
    return [hit.image_id for hit in hits], began, time.monotonic()


def _probe(
    stop: threading.Event,
    paths: tuple[SearchService, SearchService],
    queries: list[np.ndarray],
    tallies: tuple[Tally, Tally],
    seed: int,
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        query = rng.choice(queries)
        for search, tally in zip(paths, tallies, strict=True):
            tally.probes.append(_timed(search, query))


def _churn(stop: threading.Event, churn: ApiChurn, ids: list[str], counts: dict[str, int]) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        status = churn.change(rng.choice(ids), rng.choice(ACTIONS))
        counts[str(status)] = counts.get(str(status), 0) + 1


def run(settings: Settings, probes: int, churned: int, stable: int, image_dir: Path) -> None:
    ensure_exported(settings.resolved_model_dir, image_dir)
    sources = random.Random(11).sample(find_images(image_dir), churned + stable)
    ids = [f"churn-{n}" for n in range(churned)] + [f"stable-{n}" for n in range(stable)]
    photos = {i: p.read_bytes() for i, p in zip(ids, sources, strict=True)}
    with tempfile.TemporaryDirectory(prefix="visearch-privacy-") as tmp:
        private = isolated_settings(settings, Path(tmp), "privacy")
        with LocalStack(private) as stack:
            assert stack.search is not None and stack.publisher is not None
            gated = stack.search
            alone = SearchService(
                gated.encoder, gated.shards, gated.limits, gated.dedup_threshold, gated.params
            )
            api = create_api(private, gated, stack.store, stack.publisher, CollectorRegistry())
            churn = ApiChurn(TestClient(api), photos)
            for image_id in ids:
                if churn.change(image_id, "upload") != 202:
                    raise RuntimeError(f"upload of {image_id} refused")
            if stack.wait_searchable(ids, 120):
                raise TimeoutError("the worker did not index the photos")
            queries = [gated.encoder.embed(preprocess(photos[i])[None])[0] for i in ids]
            tallies = (Tally(), Tally())
            counts: dict[str, int] = {}
            stop, done = threading.Event(), threading.Event()
            threads = [threading.Thread(target=_churn, args=(stop, churn, ids[:churned], counts))]
            threads += [
                threading.Thread(target=_probe, args=(done, (gated, alone), queries, tallies, seed))
                for seed in range(2)
            ]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            while len(tallies[0].probes) < probes:
                stack.check_alive()
                time.sleep(0.2)
            done.set()
            stop.set()
            for thread in threads:
                thread.join(60)
            elapsed = time.monotonic() - started
            check_us = _denylist_check_us(stack, ids)
    for tally in tallies:
        tally.judge(churn)
    _report(tallies, counts, elapsed, check_us, churned, stable)


def _denylist_check_us(stack: LocalStack, ids: list[str]) -> float:
    """Mean cost of one store check, as the search service pays it per candidate."""
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        for image_id in ids:
            stack.store.visible(image_id)
    return (time.perf_counter() - started) / (rounds * len(ids)) * 1e6


def _report(
    tallies: tuple[Tally, Tally],
    counts: dict[str, int],
    elapsed: float,
    check_us: float,
    churned: int,
    stable: int,
) -> None:
    gated, alone = tallies
    context: dict[str, Any] = {"k": K, "churned": churned, "stable": stable, "machine": machine()}
    base = "index alone (no denylist), same probes"
    emit(BENCH, "leaks", gated.leaks, "results", alone.leaks, baseline_name=base, **context)
    emit(BENCH, "probes", len(gated.probes), "searches", len(alone.probes), **context)
    emit(BENCH, "exposures", gated.exposures, "hidden image x search", alone.exposures, **context)
    emit(
        BENCH,
        "updates_acknowledged_per_s",
        counts.get("202", 0) / elapsed,
        "1/s",
        None,
        statuses=counts,
        **context,
    )
    for q in (50, 95):
        emit(
            BENCH,
            f"search_p{q}_ms",
            gated.search_ms(q),
            "ms",
            alone.search_ms(q),
            baseline_name="same search without the denylist",
            **context,
        )
    emit(BENCH, "denylist_check_per_100_candidates_ms", check_us / 10, "ms", None, **context)


def main() -> None:
    parser = bench_parser(__doc__, "10,000 probes")
    parser.add_argument("--probes", type=int, default=100_000, help="searches with the denylist")
    parser.add_argument("--churned", type=int, default=16, help="images that change")
    parser.add_argument("--stable", type=int, default=24, help="images that never change")
    parser.add_argument("--images", type=Path, default=DEMO_CORPUS)
    args = parser.parse_args()
    if args.quick:
        args.probes = 10_000
    run(Settings.from_env(), args.probes, args.churned, args.stable, args.images)


if __name__ == "__main__":
    main()
