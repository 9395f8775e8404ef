"""CPU per upload, per search and at idle, for the whole stack, against the encoder floor.

``python -m bench.cpu_budget [--quick]`` starts ``visearch run`` (embedded
broker, embedding worker, API with in-process shards and feedback: the
processes ``make run`` starts) and reads each process's CPU seconds from
/proc while it:

1. indexes a warm-up set of photos, then sits idle: ``idle_cores``
   (the whole stack's cores over 60 s; 20 s with ``--quick``);
2. embeds uploads published to Kafka at a steady rate, 20/s then the design
   rate of 100/s: ``cpu_ms_per_upload`` (with ``rate_per_s``), all processes
   together, from the first publish to the last upload indexed;
3. answers searches over HTTP (a photo sent whole, the same with a crop, a
   stored image by id): ``cpu_ms_per_search`` for each.

The baseline of each is its floor, measured in this process in the same run:
decode + preprocess + one encoder pass (on one intra-op thread: the work
itself) per input the configuration embeds (1, plus one per tile), in
batches of ``VISEARCH_EMBED_BATCH_SIZE`` as the worker does, over the same
photos the stack is sent, for an upload;
for a search, decode + preprocess + one pass per input the search embedded
(the response's ``embedded``: the query, plus its views when the search was
unsure, the views in one batch) + an exact faiss scan of as many vectors as
the stack holds per input; for a search by id, the scan alone. The ratio is
the stack's overhead over the work itself. Floors count the CPU of the
measuring thread alone (the encoder's one intra-op thread is that thread): the
bench process's Kafka producer and HTTP client threads are not the floor's.
The load generator runs here, so its CPU is not counted.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from bench.output import bench_parser, emit, machine
from bench.support import RunningStack, running_stack
from encoders.preprocess import CropBox, ImageLimits, crop_image, decode_image, preprocess_image
from encoders.runtime import OnnxEncoder
from encoders.tiles import image_inputs, tile_boxes
from index.search import ViewVectors
from streams.image_source import file_uri
from streams.schemas import ImageUploaded
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.models.serving import with_serving_model
from visearch.processes.shards import query_windows

BENCH = "cpu_budget"
CROP = "0.25,0.25,0.6,0.6"  # relative: a third of each side, off-centre
TRICKLE_PER_S, DESIGN_PER_S = 20.0, 100.0  # upload rates measured


def floor_encoder(settings: Settings) -> OnnxEncoder:
    """The served model on one intra-op thread: the encoder's work itself. Two
    threads cost the int8 model ~8.4 ms of CPU for one input where one thread
    costs 4.2 (measured on 2 vCPUs): what a process spends beyond that is
    overhead of its configuration, not the floor."""
    return OnnxEncoder(settings.resolved_model_dir, threads=1, spin=False)


def upload_floor_ms(settings: Settings, photos: list[Path]) -> float:
    """CPU ms per image of decode + preprocess + encoder passes, batched as the worker."""
    encoder = floor_encoder(settings)
    limits, tiles = ImageLimits.from_settings(settings), tile_boxes(settings.tiles)
    data = [path.read_bytes() for path in photos]
    batch = settings.embed_batch_size
    encoder.embed(np.stack(image_inputs(decode_image(data[0], limits), tiles)))  # warm-up
    started = time.thread_time()
    for start in range(0, len(data), batch):
        inputs = [
            x
            for d in data[start : start + batch]
            for x in image_inputs(decode_image(d, limits), tiles)
        ]
        encoder.embed(np.stack(inputs))
    return (time.thread_time() - started) * 1000 / len(data)


def search_floor_ms(
    settings: Settings, queries: list[tuple[Path, int]], vectors: int, crop: bool
) -> tuple[float, float]:
    """CPU ms per query of (decode + preprocess + the encoder passes + exact scans, a
    scan alone).

    ``queries``: each photo with the inputs the stack embedded for it (the
    response's ``embedded``): 1 for the query, plus its views when the search
    was unsure; those are preprocessed and embedded here too (the views in one
    batch, as the API does), with one scan per input.
    """
    encoder = floor_encoder(settings)
    limits = ImageLimits.from_settings(settings)
    windows = query_windows(settings)
    rng = np.random.default_rng(0)
    index = faiss.IndexFlatIP(encoder.dim)
    corpus = rng.standard_normal((vectors, encoder.dim)).astype(np.float32)
    faiss.normalize_L2(corpus)
    index.add(corpus)
    box = CropBox.parse(CROP, relative=True) if crop else None
    encoder.embed(preprocess_image(decode_image(queries[0][0].read_bytes(), limits), box)[None])
    started = time.thread_time()
    for path, embedded in queries:
        image = decode_image(path.read_bytes(), limits)
        index.search(encoder.embed(preprocess_image(image, box)[None]), 24)
        if embedded > 1:
            assert windows is not None, "the stack embedded views the settings do not make"
            views = ViewVectors(encoder, windows, crop_image(image, box))()  # as the API
            assert len(views) == embedded - 1, (len(views), embedded)
            index.search(views, 24)
    whole = (time.thread_time() - started) * 1000 / len(queries)
    started = time.thread_time()
    for row in range(len(queries)):
        index.search(corpus[row : row + 1], 24)
    scan = (time.thread_time() - started) * 1000 / len(queries)
    return whole, scan


def publish(stack: RunningStack, photos: list[Path], prefix: str, rate: float) -> list[str]:
    ids = []
    started = time.perf_counter()
    for n, path in enumerate(photos):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        image_id = f"{prefix}-{n:05d}"
        event = ImageUploaded(
            image_id=image_id, owner_id="cpu", uploaded_at=time.time(), uri=file_uri(path)
        )
        stack.publisher.publish(stack.settings.topics.uploads, image_id, event)
        ids.append(image_id)
    stack.publisher.flush()
    return ids


def wait_indexed(stack: RunningStack, count: int, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while stack.http.get("/readyz").json().get("indexed", 0) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} images indexed after {timeout_s} s")
        time.sleep(0.2)


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}


def run(quick: bool) -> None:
    base = Settings.from_env()
    # The floors use the model the stack serves (`visearch run` makes the same choice).
    served, precision = with_serving_model(base, DEMO_CORPUS)
    photos = find_images(DEMO_CORPUS)
    warm, uploads = photos[:100], photos[100 : 300 if quick else 700]
    idle_s, searches = (20.0, 40) if quick else (60.0, 100)
    context = {
        "machine": machine(),
        "quick": quick,
        "tiles": base.tiles,
        "model": served.resolved_model_dir.name,
        "precision": precision.precision,
    }
    with (
        tempfile.TemporaryDirectory(prefix="visearch-cpu-") as tmp,
        running_stack(base, Path(tmp), "cpu", image_roots=str(DEMO_CORPUS)) as stack,
    ):
        for n, path in enumerate(warm):  # through the API: in the store, so searchable by id
            files = {"image": (path.name, path.read_bytes(), "image/png")}
            stack.http.post(
                "/v1/images", files=files, data={"image_id": f"warm-{n:05d}"}
            ).raise_for_status()
        wait_indexed(stack, len(warm))
        time.sleep(10.0)  # fetch waits back off to their idle value
        before = stack.cpu_by_process()
        time.sleep(idle_s)
        idle = cpu_delta(before, stack.cpu_by_process())
        cores = {name: seconds / idle_s for name, seconds in idle.items()}
        emit(
            BENCH,
            "idle_cores",
            sum(cores.values()),
            "cores",
            None,
            by_process=cores,
            seconds=idle_s,
            **context,
        )

        # Over the very photos the stack embeds: the first 64 alone cost 7.6-7.8 ms an
        # image where all 600 average 6.3 (measured), which understated the overhead.
        floor = upload_floor_ms(served, uploads)
        indexed = len(warm)
        # At a trickle (20/s) and at the design rate (100/s): the stack's fixed costs
        # (fetch polls, batches of one) weigh most per upload at the trickle.
        for prefix, rate in (("up", TRICKLE_PER_S), ("fast", DESIGN_PER_S)):
            before = stack.cpu_by_process()
            publish(stack, uploads, prefix, rate)
            indexed += len(uploads)
            wait_indexed(stack, indexed)
            spent = cpu_delta(before, stack.cpu_by_process())
            per_upload = {name: s * 1000 / len(uploads) for name, s in spent.items()}
            emit(
                BENCH, "cpu_ms_per_upload", sum(per_upload.values()), "ms", floor,
                by_process=per_upload, rate_per_s=rate, uploads=len(uploads), **context,
            )  # fmt: skip
            time.sleep(5.0)  # the backlog's last batches and acks settle

        queries = photos[700 : 700 + searches]
        kinds = {
            "bytes": lambda p: {"files": {"image": (p.name, p.read_bytes(), "image/png")}},
            "bytes_crop": lambda p: {
                "files": {"image": (p.name, p.read_bytes(), "image/png")},
                "data": {"crop": CROP, "crop_units": "relative"},
            },
            "by_id": lambda p: {"data": {"image_id": f"warm-{queries.index(p) % len(warm):05d}"}},
        }
        for kind, request in kinds.items():
            before = stack.cpu_by_process()
            embedded = []
            for query in queries:
                response = stack.http.post("/v1/search", **request(query))
                embedded.append(response.raise_for_status().json()["embedded"])
            spent = cpu_delta(before, stack.cpu_by_process())
            per_search = {name: s * 1000 / len(queries) for name, s in spent.items()}
            floor_queries = list(zip(queries, embedded, strict=True))
            whole, scan = search_floor_ms(served, floor_queries, indexed, kind == "bytes_crop")
            emit(
                BENCH, "cpu_ms_per_search", sum(per_search.values()), "ms",
                scan if kind == "by_id" else whole, kind=kind, by_process=per_search,
                indexed=indexed, inputs_per_search=sum(embedded) / len(queries),
                **context,
            )  # fmt: skip


def main() -> None:
    parser = bench_parser(__doc__, "20 s idle, 200 uploads at each rate, 40 searches")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
