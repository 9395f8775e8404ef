"""A model rollout under load: backfill ≥ 2,000 images while uploads and searches go on, switch.

On a private stack (embedded broker, Faust worker, shards in this process):

1. stores and indexes N images (default 2,000: the demo corpus's real
   photos, repeated under distinct ids) with the serving fp32 model;
2. deploys the int8 model (``visearch quantize``'s output) as a candidate;
3. while uploads continue (``--upload-rate`` per second) and a search loop
   queries with real photos, backfills every stored image into the int8
   index at ``--backfill-rate``, then switches;
4. keeps searching a few seconds after the switch.

Reported as JSON lines: backfill throughput and duration, searches that
raised or came back empty (must be 0), which versions answered, freshness of
the live uploads during the backfill (baseline: the same uploads' freshness
before the rollout started), and the switch's duration.

    python -m bench.rollout            # 2,000 images
    python -m bench.rollout --quick    # 300 images
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.embed import ensure_models
from bench.output import bench_parser, emit, machine
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.catalog.store import StoredImage
from visearch.catalog.uploads import publish_stored
from visearch.local.stack import LocalStack, isolated_settings
from visearch.models.backfill import backfill

BENCH = "rollout"


class Uploader(threading.Thread):
    """Uploads new images at a fixed rate; records publish time per image."""

    def __init__(self, stack: LocalStack, photos: list[Path], rate: float, prefix: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.photos, self.rate, self.prefix = stack, photos, rate, prefix
        self.published: dict[str, float] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        assert self.stack.publisher is not None
        number = 0
        started = time.monotonic()
        while not self.stop_event.is_set():
            image_id = f"{self.prefix}-{number:05d}"
            stored = StoredImage(image_id, "bench", False, time.time())
            self.stack.store.put(stored, self.photos[number % len(self.photos)].read_bytes())
            self.published[image_id] = time.time()
            publish_stored(self.stack.settings, self.stack.store, self.stack.publisher, stored)
            self.stack.publisher.flush()
            number += 1
            time.sleep(max(0.0, started + number / self.rate - time.monotonic()))

    def freshness_ms(self) -> list[float]:
        out = []
        for image_id, at in self.published.items():
            searchable = self.stack.searchable_at(image_id)
            if searchable is not None:
                out.append((searchable - at) * 1000)
        return out


class Searcher(threading.Thread):
    """Searches continuously with real photos; counts errors, empties and versions."""

    def __init__(self, stack: LocalStack, photos: list[Path]) -> None:
        super().__init__(daemon=True)
        self.stack, self.queries = stack, [p.read_bytes() for p in photos[:50]]
        self.errors: list[str] = []
        self.empty = 0
        self.versions: Counter[str] = Counter()
        self.stop_event = threading.Event()

    def run(self) -> None:
        assert self.stack.search is not None
        rng = random.Random(0)
        while not self.stop_event.is_set():
            try:
                result = self.stack.search.search_bytes(rng.choice(self.queries), 10)
            except Exception as exc:  # the point: count anything a user would see fail
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            self.versions[result.model_version] += 1
            if not result.hits:
                self.empty += 1


def wait_missing_zero(stack: LocalStack, version: str, timeout_s: float) -> float:
    assert stack.rollout is not None
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        entry = next(v for v in stack.rollout.status()["versions"] if v["version"] == version)
        if entry.get("missing") == 0:
            break
        time.sleep(0.2)
    return time.monotonic() - started


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--images", type=int)
    parser.add_argument("--upload-rate", type=float, default=5.0)
    parser.add_argument("--backfill-rate", type=float, default=60.0)
    args = parser.parse_args()
    count = args.images or (300 if args.quick else 2_000)
    base = Settings.from_env()
    fp32_dir = base.resolved_model_dir
    int8_dir = fp32_dir.with_name(fp32_dir.name + "-int8")
    ensure_models(fp32_dir, int8_dir, DEMO_CORPUS)
    photos = find_images(DEMO_CORPUS)
    context = {"machine": machine(), "images": count}

    with tempfile.TemporaryDirectory() as tmp:
        settings = isolated_settings(base, Path(tmp), "rollout")
        with LocalStack(settings) as stack:
            assert stack.publisher is not None and stack.rollout is not None
            ids = []
            for number in range(count):
                stored = StoredImage(f"img-{number:05d}", "bench", False, time.time())
                stack.store.put(stored, photos[number % len(photos)].read_bytes())
                publish_stored(settings, stack.store, stack.publisher, stored)
                ids.append(stored.image_id)
            stack.publisher.flush()
            assert stack.wait_searchable(ids, 1200) == set()

            before = Uploader(stack, photos, args.upload_rate, "pre")
            before.start()
            time.sleep(10)
            before.stop_event.set()
            before.join()
            time.sleep(2)
            baseline = before.freshness_ms()  # now: after the switch, other shards answer

            searcher = Searcher(stack, photos)
            searcher.start()
            uploader = Uploader(stack, photos, args.upload_rate, "live")
            uploader.start()
            new_version = stack.rollout.deploy(int8_dir)
            report = backfill(settings, new_version, args.backfill_rate, progress=False)
            caught_up_s = wait_missing_zero(stack, new_version, 600)
            live = uploader.freshness_ms()  # from the serving (old) index, during the backfill
            switch_started = time.monotonic()
            stack.rollout.switch(new_version)
            switch_s = time.monotonic() - switch_started
            time.sleep(5)
            uploader.stop_event.set()
            uploader.join()
            time.sleep(2)
            searcher.stop_event.set()
            searcher.join()

            emit(BENCH, "backfill_images_per_s", report.published / report.seconds, "images/s",
                 args.backfill_rate, published=report.published, failed=len(report.failed),
                 seconds=round(report.seconds, 1), **context)  # fmt: skip
            emit(BENCH, "index_complete_after_backfill_s", caught_up_s, "s", None, **context)
            emit(BENCH, "switch_s", switch_s, "s", None, **context)
            emit(BENCH, "search_errors", float(len(searcher.errors)), "searches", None,
                 examples=searcher.errors[:3], **context)  # fmt: skip
            emit(BENCH, "search_empty", float(searcher.empty), "searches", None,
                 searches=sum(searcher.versions.values()),
                 by_version=dict(searcher.versions), **context)  # fmt: skip
            emit(BENCH, "upload_freshness_p99_ms_during_rollout",
                 float(np.percentile(live, 99)), "ms", float(np.percentile(baseline, 99)),
                 uploads=len(uploader.published), searchable=len(live), **context)  # fmt: skip


if __name__ == "__main__":
    main()
