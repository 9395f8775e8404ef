"""Malformed events mixed into a stream of good uploads: nothing lost, every reason right.

Publishes N upload events (default 10,000) of which a share (default 10 %)
are malformed in twelve different ways, interleaved at random, to a private
stack (embedded broker, Faust worker, shard). Then checks, and reports as
JSON lines:

- every malformed event is in the dead-letter topic exactly once, with the
  expected error code (per kind);
- every good event is searchable (indexed by the shard) exactly once;
- throughput of good images, against the same run's pace for good images
  alone (baseline: the first 10 % of good events, published before any bad
  one, i.e. the worker with clean input).

Good events point at real photos of the demo corpus copied into the image
store under distinct ids (file:// URIs, as ``visearch ingest`` publishes).

    python -m bench.malformed_mix            # 10,000 events, 1,000 malformed
    python -m bench.malformed_mix --quick    # 1,000 events, 100 malformed
"""

from __future__ import annotations

import base64
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.output import bench_parser, emit, machine
from streams.dead_letters import read_dead_letters
from streams.image_source import file_uri
from streams.schemas import ImageUploaded, encode
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.catalog.store import StoredImage
from visearch.local.stack import LocalStack, isolated_settings
from visearch.models.serving import ensure_exported

BENCH = "malformed_mix"


def malformed(kind: str, number: int, store_dir: Path) -> tuple[bytes, str]:
    """The bytes of one malformed upload event of ``kind`` and its expected code."""
    good = {
        "image_id": f"bad-{number}",
        "owner_id": "bench",
        "uploaded_at": time.time(),
        "uri": file_uri(store_dir / f"bad-{number}.img"),  # its own file, never written
    }
    inline = {k: v for k, v in good.items() if k != "uri"}
    cases: dict[str, tuple[object, str]] = {
        "not_json": (b"{oops", "not_json"),
        "not_object": (b"[1, 2]", "not_object"),
        "missing_field": ({k: v for k, v in good.items() if k != "owner_id"}, "missing_field"),
        "wrong_type": ({**good, "uploaded_at": "yesterday"}, "wrong_type"),
        "schema_version": ({**good, "schema_version": 99}, "unknown_schema_version"),
        "unknown_field": ({**good, "colour": "red"}, "unknown_field"),
        "bad_id": ({**good, "image_id": "../etc"}, "invalid_value"),
        "future_time": ({**good, "uploaded_at": time.time() + 86_400}, "invalid_value"),
        "traversal": ({**good, "uri": "file:///etc/passwd"}, "forbidden_path"),
        "missing_file": (good, "missing_file"),
        "undecodable": (
            {**inline, "image_b64": base64.b64encode(b"not an image").decode()},
            "undecodable",
        ),
        "bad_base64": ({**inline, "image_b64": "!!!"}, "bad_inline"),
    }
    payload, code = cases[kind]
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return raw, code


KINDS = (
    "not_json", "not_object", "missing_field", "wrong_type", "schema_version", "unknown_field",
    "bad_id", "future_time", "traversal", "missing_file", "undecodable", "bad_base64",
)  # fmt: skip


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--events", type=int)
    parser.add_argument("--bad-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    total = args.events or (1_000 if args.quick else 10_000)
    bad_count = int(total * args.bad_share)
    good_count = total - bad_count
    rng = random.Random(args.seed)

    from streams.settings import Settings

    base = Settings.from_env()
    ensure_exported(base.resolved_model_dir, DEMO_CORPUS)
    photos = find_images(DEMO_CORPUS)
    with tempfile.TemporaryDirectory() as tmp:
        settings = isolated_settings(base, Path(tmp), "malformed")
        with LocalStack(settings) as stack:
            assert stack.publisher is not None
            topic = settings.topics.uploads
            good_ids = []
            for number in range(good_count):
                image_id = f"good-{number:05d}"
                stored = StoredImage(image_id, "bench", False, time.time())
                stack.store.put(stored, photos[number % len(photos)].read_bytes())
                good_ids.append(image_id)
            clean = good_ids[: good_count // 10]
            mixed: list[tuple[str, bytes, str]] = [
                (image_id, b"", "") for image_id in good_ids[len(clean) :]
            ]
            for number in range(bad_count):
                raw, code = malformed(KINDS[number % len(KINDS)], number, stack.store.root)
                mixed.append((f"bad-{number}", raw, code))
            rng.shuffle(mixed)
            expected = Counter(code for _, _, code in mixed if code)

            def publish_good(image_id: str) -> None:
                event = ImageUploaded(
                    image_id=image_id,
                    owner_id="bench",
                    uploaded_at=time.time(),
                    uri=file_uri(stack.store.path_of(image_id)),
                )
                stack.publisher.publish_raw(topic, image_id.encode(), encode(event))

            started = time.monotonic()
            for image_id in clean:
                publish_good(image_id)
            stack.publisher.flush()
            assert stack.wait_searchable(clean, 600) == set()
            clean_rate = len(clean) / (time.monotonic() - started)

            started = time.monotonic()
            for key, raw, code in mixed:
                if code:
                    stack.publisher.publish_raw(topic, key.encode(), raw)
                else:
                    publish_good(key)
            stack.publisher.flush()
            missing = stack.wait_searchable(good_ids, 1200)
            mixed_rate = (good_count - len(clean)) / (time.monotonic() - started)

            time.sleep(2)  # the last dead letters are written after their batch
            letters = [
                letter
                for _, letter in read_dead_letters(settings, timeout_s=120)
                if letter.source_topic == topic
            ]
            got = Counter(letter.error_code for letter in letters)
            indexed = sum(len(shard) for shard in stack.shards)
            context = {"machine": machine(), "events": total, "malformed": bad_count}
            emit(BENCH, "good_images_missing", float(len(missing)), "images", None, **context)
            emit(BENCH, "good_images_indexed", float(indexed), "images", float(good_count),
                 **context)  # fmt: skip
            emit(BENCH, "dead_letters", float(len(letters)), "events", float(bad_count),
                 by_code=dict(sorted(got.items())), **context)  # fmt: skip
            emit(BENCH, "dead_letter_codes_as_expected", float(got == expected), "bool", None,
                 expected=dict(sorted(expected.items())), **context)  # fmt: skip
            emit(BENCH, "good_images_per_s_mixed", mixed_rate, "images/s", clean_rate,
                 **context)  # fmt: skip


if __name__ == "__main__":
    main()
