"""The soak's client traffic, in a process of its own: uploads, and searches with their sessions.

Clients are not part of the system under test. In the API's process the
load took ~35 % of a core (the upload producer and pacing) plus the search
clients' HTTP and JSON work, and all of it competed for that process's GIL
with the searches being measured; every GIL hand-back then waited for a
busy core. Here it runs beside the stack, as backends and users do, and
reports what it did on a queue:

- ``("uploads", [(image_id, uploaded_at), ...])``: published uploads, for
  the freshness measurement;
- ``("search", result_ids, began, ended, timings_ms, interactions)``: one
  search (``time.monotonic`` times, system-wide on Linux, so the parent's
  privacy audit can compare them with its own acknowledgements);
- ``("search_error",)``: a search that failed over HTTP.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.freshness import publish_upload
from feedback.simulate import ApiClient, ClickModel, session_events
from streams.publisher import EventPublisher
from streams.settings import Settings

CHURNED = 8  # the first photos: their copies are churned by the soak's privacy changes
REPORT_S = 0.05  # how often published uploads are reported


@dataclass(frozen=True)
class LoadPlan:
    """What the load process does; picklable, it crosses to a spawned process."""

    settings: Settings  # the stack's: topics and how to reach the broker
    base_url: str
    uris: list[str]  # stored photos that upload events point at
    query_ids: list[str]  # ids searched for
    id_space: int  # upload ids reused round-robin (0: a fresh id per upload)
    upload_rate: float
    search_rate: float


def paced(stop: Any, rate: float, action: Callable[[int], None]) -> None:
    """Call ``action(n)`` ``rate`` times a second until stopped (catching up if late)."""
    started = time.perf_counter()
    n = 0
    while not stop.is_set():
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            stop.wait(delay)
            continue
        action(n)
        n += 1


class _Uploads:
    """Publishes upload event ``n`` when called; reports them in batches."""

    def __init__(self, plan: LoadPlan, out: Any) -> None:
        self.plan = plan
        self.out = out
        # A backend's producer batches for a few ms; the event time is set before the send.
        self.publisher = EventPublisher(plan.settings, linger_ms=5)
        self.batch: list[tuple[str, float]] = []
        self.reported_at = time.monotonic()

    def __call__(self, n: int) -> None:
        plan = self.plan
        image_id = f"soak-{n % plan.id_space if plan.id_space else n:07d}"
        # Not the churned photos: their copies stay the only near-duplicates of their queries.
        uri = plan.uris[CHURNED + n % (len(plan.uris) - CHURNED)]
        event = publish_upload(self.publisher, plan.settings, image_id, uri)
        self.batch.append((image_id, event.uploaded_at))
        if time.monotonic() - self.reported_at > REPORT_S:
            self._report()

    def _report(self) -> None:
        self.out.put(("uploads", self.batch))
        self.batch = []
        self.reported_at = time.monotonic()

    def finish(self) -> None:
        self.publisher.flush()
        self._report()
        self.publisher.stop()


def _searcher(plan: LoadPlan, seed: int, out: Any) -> Callable[[int], None]:
    rng, client, clicks = random.Random(seed), ApiClient(plan.base_url, 30), ClickModel()

    def search(n: int) -> None:
        # Half the searches query the photos that the churn copies, so that the
        # churned images rank high in their results when visible.
        pool = plan.query_ids[:CHURNED] if n % 2 else plan.query_ids
        query = rng.choice(pool)
        began = time.monotonic()
        try:
            response = client.search(query, 10)
        except OSError:
            out.put(("search_error",))
            return
        ended = time.monotonic()
        events = session_events(rng, clicks, f"soak-user-{seed}", query, response, time.time())
        client.log(events)
        ids = [hit["image_id"] for hit in response["results"]]
        out.put(("search", ids, began, ended, response["timings_ms"], len(events)))

    return search


def run_load(plan: LoadPlan, stop: Any, out: Any) -> None:
    """The load process's body: upload and search threads until ``stop`` is set."""
    upload = _Uploads(plan, out)
    # A search plus its interactions takes ~100-300 ms on 2 busy cores: enough threads
    # that the rate holds (each thread paces itself at its share).
    searchers = max(1, round(plan.search_rate / 4))
    jobs: list[tuple[float, Callable[[int], None]]] = [(plan.upload_rate, upload)]
    jobs += [(plan.search_rate / searchers, _searcher(plan, n, out)) for n in range(searchers)]
    threads = [
        threading.Thread(target=paced, args=(stop, rate, action), daemon=True)
        for rate, action in jobs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    upload.finish()


class LoadProcess:
    """Starts :func:`run_load` in a spawned process and hands back its reports."""

    def __init__(self, plan: LoadPlan) -> None:
        spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._stop = spawn.Event()
        self._out: Any = spawn.Queue()
        self._process = spawn.Process(
            target=run_load, args=(plan, self._stop, self._out), name="soak-load", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self) -> None:
        self._process.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._process.join(timeout_s)

    def reports(self, until: threading.Event) -> Iterator[tuple[Any, ...]]:
        """Reports as they come, until ``until`` is set and the queue is drained."""
        while not (until.is_set() and self._out.empty()):
            try:
                yield self._out.get(timeout=0.2)
            except queue.Empty:
                continue
