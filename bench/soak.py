"""Soak: uploads, searches, interactions and privacy churn for minutes, sampled every 10 s.

A private stack (embedded broker, Faust embedding worker, in-process index
shards and feedback aggregator) behind the real HTTP API (uvicorn on a
loopback port). Load, all at once:

- ``--upload-rate`` uploads/s (100) of real photos, published to the uploads
  topic as backends do, with a batching producer (each photo stored once,
  events point at it) under ``--id-space`` ids (10,000) used round-robin:
  once every id exists, each upload replaces an image (an upsert), so the
  index holds a steady number of images as in a service where deletes
  balance uploads, and RSS growth after that (two rounds of the id space,
  see ``after_warm_up``) is what leaks (0 = fresh ids forever: the index,
  and RSS with it, grows by design);
- ``--search-rate`` searches/s (20) over HTTP by image id, each followed by
  its session's interactions (impressions, position-biased clicks, dwell:
  ``feedback.simulate.session_events``) on ``POST /v1/interactions``;
- one privacy change per second through the API (private, public, flag,
  unflag, delete, re-upload of a few photos that half of the searches query
  for), every search result judged by :mod:`bench.privacy_audit`.

Uploads and searches come from a process of their own (:mod:`bench.soak_load`),
as clients do: in the API's process they competed with it for its GIL.

Every ``--sample-s`` seconds one JSON line: RSS of each process (this one:
API + shards + feedback; the worker; the broker) and the cores each used
since the last sample (the load process's too), search p50/p95 over HTTP
and the API's own p95 per step (preprocess, embed, search), freshness p99
(published -> the shard applied the vector, as ``bench.freshness``),
consumer lag of the shards, dead letters, leaks. Then summary lines (RSS
growth after warm-up: the first fifth of the run, and at least two rounds
of the id space; each process's cores over the run, its first and its last
fifth; freshness p99; search p95, of the worst sample and of the whole run,
against the 50 ms goal; leaks) and an SVG plot at ``--plot``.

    python -m bench.soak --plot soak.svg            # 10 minutes
    python -m bench.soak --quick --plot soak.svg    # 1 minute
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.freshness import store_sources, warm_up
from bench.output import bench_parser, emit, machine
from bench.privacy_audit import ApiChurn
from bench.soak_load import CHURNED, LoadPlan, LoadProcess, paced
from bench.support import cpu_seconds, percentile
from streams.settings import Settings
from visearch.api.from_stack import stack_api
from visearch.api.serving import serve_in_thread
from visearch.catalog.corpus import DEMO_CORPUS, find_images, image_id_for
from visearch.evaluation.svg import line_chart
from visearch.local.stack import LocalStack, isolated_settings
from visearch.models.serving import with_serving_model

BENCH = "soak"
SEARCH_GOAL_P95_MS = 50.0  # issue 9: full query p95 on 2 cores with the int8 model
# The feedback aggregator keeps event ids for deduplication (and closed-session
# markers) for its lateness horizon, 1 h by default: over a 10-minute run that
# state only grows, by design (~220 events/s at 20 searches/s). A 2-minute
# horizon lets it reach its steady size, so RSS growth after warm-up shows leaks.
FEEDBACK_HORIZON_S = 120.0
CHURN_ACTIONS = ("private", "public", "flag", "unflag", "delete", "upload", "upload_private")


def _pct(values: list[float], q: float) -> float | None:
    """A percentile for the JSON lines: None (null) rather than NaN for an empty window."""
    return percentile(values, q) if values else None


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_since(mark: tuple[int, float] | None, pid: int, used: float) -> float:
    """CPU seconds process ``pid`` used since ``mark`` ((pid, CPU seconds) then).

    A process that replaced the marked one (a restarted worker) started after
    the mark, so all its CPU counts; one that has gone reads 0 (what it used
    before it went is lost, never negative).
    """
    if mark is None or mark[0] != pid:
        return used
    return max(0.0, used - mark[1])


@dataclass
class Observations:
    """What the load threads saw; the sampler reads and clears the window lists."""

    search_ms: list[float] = field(default_factory=list)
    # The API's own account of each search (its timings_ms, per step and total):
    # the rest of search_ms is HTTP and queueing for the event loop and the GIL.
    server_ms: list[dict[str, float]] = field(default_factory=list)
    probes: list[tuple[list[str], float, float]] = field(default_factory=list)
    produced: dict[str, float] = field(default_factory=dict)  # upload id -> publish time
    uploads: int = 0
    searches: int = 0
    search_errors: int = 0
    interactions: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Load:
    """The client traffic (its own process, :mod:`bench.soak_load`) and the privacy churn."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.seen = Observations()
        self.stop = threading.Event()
        photos = {
            f"churn-{n}": Path(plan.uris[n].removeprefix("file://")).read_bytes()
            for n in range(CHURNED)
        }
        # The churn stays here: the audit needs its acknowledgement times, at 1 change/s.
        self.churn = ApiChurn(httpx.Client(base_url=plan.base_url, timeout=30), photos)
        self.process = LoadProcess(plan)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for image_id in self.churn.photos:
            if self.churn.change(image_id, "upload") != 202:
                raise RuntimeError(f"upload of {image_id} refused")
        self.process.start()
        rng = random.Random(5)

        def change(n: int) -> None:
            self.churn.change(rng.choice(list(self.churn.photos)), rng.choice(CHURN_ACTIONS))

        for target, args in ((paced, (self.stop, 1.0, change)), (self._collect, ())):
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.process.stop()
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _collect(self) -> None:
        """The load process's reports, into the observations the sampler reads."""
        seen = self.seen
        for report in self.process.reports(self.stop):
            with seen.lock:
                if report[0] == "uploads":
                    for image_id, uploaded_at in report[1]:
                        seen.produced[image_id] = uploaded_at
                    seen.uploads += len(report[1])
                elif report[0] == "search":
                    _, ids, began, ended, timings, interactions = report
                    seen.search_ms.append((ended - began) * 1000)
                    seen.server_ms.append(timings)
                    seen.probes.append((ids, began, ended))
                    seen.searches += 1
                    seen.interactions += interactions
                else:
                    seen.search_errors += 1


@dataclass
class Sampler:
    """Turns the load's observations into one sample every period."""

    stack: LocalStack
    load: Load
    started: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    freshness_ms: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)  # the whole run, over HTTP
    server_total_ms: list[float] = field(default_factory=list)  # the same, inside the API
    leaks: int = 0
    exposures: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # "source/code" -> n
    # (when, (pid, CPU seconds) per process) at the last sample: the next one's cores
    cpu_mark: tuple[float, dict[str, tuple[int, float]]] | None = None

    def pids(self) -> dict[str, int]:
        pids = {"api": os.getpid()}
        if self.stack.worker is not None:
            pids["worker"] = self.stack.worker.pid
        broker = self.stack.broker
        if broker is not None and broker.pid is not None:
            pids["broker"] = broker.pid
        return pids

    def cores(self) -> dict[str, float]:
        """Cores each process used since the last sample (the load process's too):
        where the two cores go, and whether one process's share grows with time."""
        pids = self.pids()
        load = self.load.process.pid
        if load is not None:
            pids["load"] = load
        now = time.monotonic()
        cpu = {name: (pid, cpu_seconds(pid)) for name, pid in pids.items()}
        mark, self.cpu_mark = self.cpu_mark, (now, cpu)
        if mark is None:
            return {}
        elapsed = max(now - mark[0], 1e-9)
        return {
            name: round(cpu_since(mark[1].get(name), pid, used) / elapsed, 3)
            for name, (pid, used) in cpu.items()
        }

    def sample(self) -> dict[str, Any]:
        self.stack.check_alive()
        seen = self.load.seen
        settled = self.load.churn.settled_until()
        with seen.lock:
            search_ms, seen.search_ms = seen.search_ms, []
            server_ms, seen.server_ms = seen.server_ms, []
            ready = [p for p in seen.probes if p[2] < settled]
            seen.probes = [p for p in seen.probes if p[2] >= settled]
            pending = dict(seen.produced)
        fresh = []
        for image_id, produced_at in pending.items():
            applied = self.stack.searchable_at(image_id)
            # An id of the id space may hold an earlier upload: wait for this one.
            if applied is not None and applied >= produced_at:
                fresh.append((applied - produced_at) * 1000)
                with seen.lock:
                    seen.produced.pop(image_id, None)
        self.freshness_ms += fresh
        self.search_ms += search_ms
        self.server_total_ms += [t["total"] for t in server_ms]
        audit = self.load.churn.audit
        leaks = sum(len(audit.leaks(ids, b, e)) for ids, b, e in ready)
        self.leaks += leaks
        self.exposures += sum(audit.exposures(b, e) for _, b, e in ready)
        letters = self.stack.dead_letters
        if letters is not None:
            self.dead_letter_reasons = {f"{s}/{c}": n for (s, c), n in letters.counts.items()}
        elapsed = round(time.monotonic() - self.started, 1)
        sample: dict[str, Any] = {
            "t_s": elapsed,
            "rss_mb": {name: round(rss_mb(pid), 1) for name, pid in self.pids().items()},
            "cores": self.cores(),
            "search_p50_ms": _pct(search_ms, 50),
            "search_p95_ms": _pct(search_ms, 95),
            # Inside the API, by step (preprocess, embed, search, total).
            "search_server_p95_ms": {
                step: _pct([t[step] for t in server_ms if step in t], 95)
                for step in ("preprocess", "embed", "search", "total")
            },
            "searches": len(search_ms),
            "freshness_p99_ms": _pct(fresh, 99),
            "indexed": len(fresh),
            "unindexed": len(pending) - len(fresh),
            "consumer_lag": sum(sum(c.lag.values()) for c in self.stack.consumers),
            "dead_letters": sum(letters.counts.values()) if letters is not None else None,
            "leaks": leaks,
            "uploads_total": seen.uploads,
            "interactions_total": seen.interactions,
        }
        self.samples.append(sample)
        emit(BENCH, "sample", elapsed, "s", None, **sample)
        return sample


def run(
    settings: Settings,
    minutes: float,
    upload_rate: float,
    search_rate: float,
    sample_s: float,
    image_dir: Path,
    plot: Path | None,
    id_space: int = 0,
    feedback_horizon_s: float = FEEDBACK_HORIZON_S,
) -> None:
    settings, _ = with_serving_model(settings, image_dir)  # what `visearch run` serves
    sources = find_images(image_dir)
    with tempfile.TemporaryDirectory(prefix="visearch-soak-") as tmp:
        private = isolated_settings(settings, Path(tmp), "soak").with_overrides(
            feedback_allowed_lateness_s=feedback_horizon_s, image_roots=str(image_dir)
        )
        with LocalStack(private) as stack:
            uris = store_sources(stack, sources, image_dir)
            warm_up(stack, uris[0])
            with serve_in_thread(stack_api(stack)) as base_url:
                load = Load(
                    LoadPlan(
                        private,
                        base_url,
                        uris,
                        [image_id_for(path, image_dir) for path in sources],
                        id_space,
                        upload_rate,
                        search_rate,
                    )
                )
                load.start()
                sampler = Sampler(stack, load)
                sampler.cores()  # the mark the first sample's cores count from
                try:
                    deadline = sampler.started + minutes * 60
                    while time.monotonic() < deadline:
                        time.sleep(max(0.0, min(sample_s, deadline - time.monotonic())))
                        sampler.sample()
                finally:
                    load.finish()
            time.sleep(2.0)  # the last probes and uploads settle, then are judged
            sampler.sample()
    context = {
        "minutes": minutes,
        "upload_rate": upload_rate,
        "search_rate": search_rate,
        "id_space": id_space,
        "feedback_horizon_s": feedback_horizon_s,
    }
    _summarise(sampler, load.seen, context)
    if plot is not None:
        plot.write_text(_plot(sampler.samples))


def after_warm_up(
    samples: list[dict[str, Any]], id_space: int, horizon_s: float = 0.0
) -> list[dict[str, Any]]:
    """The samples after the first fifth of the run, two rounds of the id space
    and the feedback horizon.

    Until every id exists the index grows, and so does RSS, by design; the
    second round replaces each image once, so the partitions' retired rows
    reach their compaction bound too; the feedback state grows until its
    oldest event ids leave the horizon. A short run that never gets there
    keeps its last fifth (and says so in id_space).
    """
    if len(samples) < 5:
        return samples
    start = len(samples) // 5
    last_fifth = len(samples) - max(1, len(samples) // 5)
    if id_space:
        filled = [i for i, s in enumerate(samples) if s["uploads_total"] >= 2 * id_space]
        start = max(start, filled[0] if filled else last_fifth)
    past_horizon = [i for i, s in enumerate(samples) if s["t_s"] >= horizon_s]
    start = max(start, past_horizon[0] if past_horizon else last_fifth)
    return samples[start:]


def _summarise(sampler: Sampler, seen: Observations, context: dict[str, Any]) -> None:
    samples = sampler.samples[:-1] or sampler.samples  # the last one is after the load
    context = {**context, "machine": machine()}
    warm = after_warm_up(samples, context["id_space"], context["feedback_horizon_s"])
    first, last = warm[: max(1, len(warm) // 5)], warm[-max(1, len(warm) // 5) :]
    for name in samples[0]["rss_mb"]:
        before = float(np.median([s["rss_mb"][name] for s in first]))
        after = float(np.median([s["rss_mb"][name] for s in last]))
        emit(
            BENCH,
            f"rss_growth_after_warmup_{name}",
            (after / before - 1) * 100,
            "%",
            10.0,
            baseline_name="acceptance limit",
            rss_mb_start=before,
            rss_mb_end=after,
            **context,
        )
    for name in samples[-1]["cores"]:
        used = [s["cores"].get(name, 0.0) for s in samples if s["cores"]] or [0.0]
        emit(
            BENCH,
            f"cores_{name}",
            float(np.mean(used)),
            "cores",
            None,
            first_fifth=float(np.mean(used[: max(1, len(used) // 5)])),
            last_fifth=float(np.mean(used[-max(1, len(used) // 5) :])),
            **context,
        )
    all_search_p95 = max(_nan(s["search_p95_ms"]) for s in samples)
    emit(
        BENCH,
        "freshness_p99_ms",
        percentile(sampler.freshness_ms, 99),
        "ms",
        1000.0,
        baseline_name="acceptance limit",
        indexed=len(sampler.freshness_ms),
        **context,
    )
    emit(
        BENCH,
        "search_p95_ms_worst_sample",
        all_search_p95,
        "ms",
        SEARCH_GOAL_P95_MS,
        baseline_name="API goal (issue 9)",
        **context,
    )
    emit(
        BENCH,
        "search_p95_ms",
        percentile(sampler.search_ms, 95),
        "ms",
        SEARCH_GOAL_P95_MS,
        baseline_name="API goal (issue 9)",
        p50_ms=percentile(sampler.search_ms, 50),
        inside_api_p95_ms=percentile(sampler.server_total_ms, 95),
        searches=len(sampler.search_ms),
        **context,
    )
    emit(
        BENCH,
        "leaks",
        sampler.leaks,
        "results",
        None,
        exposures=sampler.exposures,
        judged_searches=seen.searches,
        **context,
    )
    by_reason = sampler.dead_letter_reasons
    emit(
        BENCH,
        "dead_letters",
        sum(by_reason.values()),
        "records",
        None,
        by_reason=by_reason,
        **context,
    )
    emit(
        BENCH,
        "consumer_lag_max",
        max(s["consumer_lag"] for s in samples),
        "records",
        None,
        **context,
    )
    elapsed = context["minutes"] * 60
    emit(
        BENCH,
        "uploads_per_s",
        seen.uploads / elapsed,
        "1/s",
        context["upload_rate"],
        baseline_name="target",
        **context,
    )
    emit(
        BENCH,
        "searches_per_s",
        seen.searches / elapsed,
        "1/s",
        context["search_rate"],
        baseline_name="target",
        search_errors=seen.search_errors,
        interactions=seen.interactions,
        **context,
    )


def _plot(samples: list[dict[str, Any]]) -> str:
    """Four charts stacked in one SVG: RSS, cores, latencies, backlog; each scaled to its max."""
    minutes = [s["t_s"] / 60 for s in samples]
    x_range = (0.0, max(minutes[-1], 1e-3))

    def scaled(
        series: dict[str, list[float]],
    ) -> tuple[dict[str, tuple[list[float], list[float]]], float]:
        top = max((v for values in series.values() for v in values if v == v), default=1.0) or 1.0
        return {
            k: (minutes, [v / top if v == v else 0.0 for v in vs]) for k, vs in series.items()
        }, top

    charts = []
    rss, top = scaled({n: [s["rss_mb"][n] for s in samples] for n in samples[0]["rss_mb"]})
    charts.append(
        line_chart(
            {f"RSS {n}": xy for n, xy in rss.items()},
            "minutes",
            f"RSS (1 = {top:.0f} MB)",
            x_range=x_range,
        )
    )
    used = [s for s in samples if s.get("cores")]  # the first sample has none
    if used:
        cores, top = scaled({n: [s["cores"].get(n, 0.0) for s in used] for n in used[-1]["cores"]})
        at = [s["t_s"] / 60 for s in used]
        charts.append(
            line_chart(
                {f"cores {n}": (at, ys) for n, (_, ys) in cores.items()},
                "minutes",
                f"CPU (1 = {top:.2f} cores)",
                x_range=x_range,
            )
        )
    latency, top = scaled(
        {
            "search p95": [_nan(s["search_p95_ms"]) for s in samples],
            "search p50": [_nan(s["search_p50_ms"]) for s in samples],
            "freshness p99": [_nan(s["freshness_p99_ms"]) for s in samples],
        }
    )
    charts.append(line_chart(latency, "minutes", f"latency (1 = {top:.0f} ms)", x_range=x_range))
    backlog, top = scaled(
        {
            "consumer lag": [float(s["consumer_lag"]) for s in samples],
            "unindexed uploads": [float(s["unindexed"]) for s in samples],
            "dead letters": [float(s["dead_letters"] or 0) for s in samples],
            "leaks": [float(s["leaks"]) for s in samples],
        }
    )
    charts.append(line_chart(backlog, "minutes", f"records (1 = {top:.0f})", x_range=x_range))
    height = 340
    body = "".join(
        f'<g transform="translate(0 {n * height})">{chart}</g>' for n, chart in enumerate(charts)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="560" height="{height * len(charts)}">'
        f"{body}</svg>\n"
    )


def main() -> None:
    parser = bench_parser(__doc__, "1 minute")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--upload-rate", type=float, default=100.0, help="uploads per second")
    parser.add_argument("--search-rate", type=float, default=20.0, help="searches per second")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--plot", type=Path, help="write an SVG plot of the samples here")
    parser.add_argument(
        "--id-space",
        type=int,
        default=10_000,
        help="distinct image ids, reused round-robin (0: a fresh id per upload)",
    )
    parser.add_argument(
        "--feedback-horizon-s",
        type=float,
        default=FEEDBACK_HORIZON_S,
        help="the feedback aggregator's lateness (dedup) horizon for the run",
    )
    parser.add_argument("--images", type=Path, default=DEMO_CORPUS)
    args = parser.parse_args()
    if args.quick:
        args.minutes = 1.0
    run(
        Settings.from_env(),
        args.minutes,
        args.upload_rate,
        args.search_rate,
        args.sample_s,
        args.images,
        args.plot,
        args.id_space,
        args.feedback_horizon_s,
    )


if __name__ == "__main__":
    main()
