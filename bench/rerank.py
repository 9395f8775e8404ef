"""What the optional re-ranking steps cost a search: query expansion and crop verification
against plain search, on the same index, the same queries, in the same run.

The index is the service's (its partition factory, ``bench.search_api``'s mix of
real photos and synthetic neighbours); each indexed id maps to a real photo
file, so crop verification decodes and matches real pixels. Queries are real
photos as JPEG, every third with a crop box (``bench.search_api.query_images``).
Every variant is the in-process ``SearchService.search_bytes`` (decode + embed +
search + re-rank) built by ``visearch.processes.shards.search_service`` from settings
that differ only in the option measured:

- baseline: plain search (no expansion, no verification);
- ``query_expansion=3``: a first search, the blend, a second search;
- ``verify_top=50``, cold: the first pass over the queries with an empty
  thumbnail cache; warm: the same queries again.

    python -m bench.rerank            # int8, 100,000 images, 300 searches per variant
    python -m bench.rerank --quick    # int8, 20,000 images, 60 searches
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.output import emit, machine
from bench.search_api import (
    K,
    bench_settings,
    build_index,
    index_and_rounds,
    index_bench_arguments,
    percentiles,
    query_images,
    timed,
)
from encoders.preprocess import CropBox
from index.search import SearchService
from streams.encoder_set import encoder_from_settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.processes.shards import search_service

BENCH = "rerank"
VARIANTS = {
    "query_expansion_3": {"query_expansion": 3},
    "verify_50_cold": {"verify_top": 50},
    "verify_50_warm": {"verify_top": 50},
}


def latencies(
    search: SearchService, queries: list[tuple[bytes, str | None]], rounds: int
) -> list[float]:
    """Milliseconds per ``search_bytes`` call, cycling through ``queries``."""
    prepared = [(data, CropBox.parse(crop, relative=True) if crop else None)
                for data, crop in queries]  # fmt: skip

    def one(index: int) -> float:
        data, box = prepared[index % len(prepared)]
        return timed(lambda: search.search_bytes(data, K, box))

    return [one(index) for index in range(rounds)]


def main() -> None:
    args = index_bench_arguments(__doc__.splitlines()[0]).parse_args()
    total, rounds = index_and_rounds(args)

    with tempfile.TemporaryDirectory() as tmp:
        settings, model_dir = bench_settings(args.model, Path(tmp))
        encoder = encoder_from_settings(model_dir, settings)
        photos = find_images(DEMO_CORPUS)
        shard = build_index(settings, encoder, photos, total, args.seed)
        # every id (img-N) is some real photo, so verification has pixels to match
        path_of = lambda image_id: photos[int(image_id.rsplit("-", 1)[1]) % len(photos)]  # noqa: E731
        queries = query_images(photos, rounds, args.seed)
        context = {"machine": machine(), "model": args.model, "index_images": total,
                   "queries": len(queries), "searches": rounds, "k": K}  # fmt: skip

        plain = search_service(settings, encoder, [shard], image_path=path_of)
        latencies(plain, queries, 10)  # warm-up: ORT session, faiss, allocator
        base_p50, base_p95 = percentiles(latencies(plain, queries, rounds))
        emit(BENCH, "search_p50_ms", base_p50, "ms", base_p50, variant="plain", **context)
        emit(BENCH, "search_p95_ms", base_p95, "ms", base_p95, variant="plain", **context)
        verified = None
        for variant, overrides in VARIANTS.items():
            if variant.endswith("_warm") and verified is not None:
                search = verified  # the same verifier, its thumbnail cache now filled
            else:
                configured = settings.with_overrides(**overrides)
                search = search_service(configured, encoder, [shard], image_path=path_of)
                verified = search if "verify_top" in overrides else verified
            p50, p95 = percentiles(latencies(search, queries, rounds))
            emit(BENCH, "search_p50_ms", p50, "ms", base_p50, variant=variant, **context)
            emit(BENCH, "search_p95_ms", p95, "ms", base_p95, variant=variant, **context)


if __name__ == "__main__":
    main()
