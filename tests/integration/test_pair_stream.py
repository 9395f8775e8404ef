"""Labelled pairs streamed from the real topic: once each, resumable from stored offsets, with
the images' pixels from the store and hidden images never handed to training."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from feedback.pair_dataset import PairStream, store_pixels
from streams.schemas import LabeledPair
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration


def _pair(n: int, query: str, positive: str, negatives: list[str]) -> LabeledPair:
    return LabeledPair(
        pair_id=f"topic-{n}-1", search_id=f"topic-{n}", query_image_id=query,
        positive_image_id=positive, position=1, weight=1.0, model_version="m",
        created_at=time.time(), negative_image_ids=negatives,
    )  # fmt: skip


def test_pairs_from_the_topic(
    stack: LocalStack, photo_paths: list[Path], publish: Callable[..., list[str]]
) -> None:
    assert stack.publisher is not None
    ids = publish(stack, photo_paths[:4], "pairs")
    topic = stack.settings.topics.labeled_pairs
    pairs = [_pair(n, ids[n % 2], ids[2], [ids[3]]) for n in range(12)]
    for pair in [*pairs[:6], pairs[2], *pairs[6:]]:  # pair 2 published again
        stack.publisher.publish(topic, pair.search_id, pair)
    stack.publisher.flush()

    full = [pair.pair_id for pair in PairStream(stack.settings, idle_s=1.0).records()]
    assert sorted(full) == sorted(pair.pair_id for pair in pairs)  # the replayed one once
    first = PairStream(stack.settings, idle_s=1.0)
    head = [item["pair_id"] for _, item in zip(range(5), first, strict=False)]
    resumed = PairStream(stack.settings, idle_s=1.0)
    resumed.load_state_dict(first.state_dict())
    rest = [item["pair_id"] for item in resumed]
    assert len(head) == 5 and len(head) + len(rest) == len(full)  # nothing repeated
    assert set(head) | set(rest) == set(full)  # nothing skipped

    stack.store.set_private(ids[3], True)  # a negative made private
    loaded = PairStream(stack.settings, store_pixels(stack.settings), idle_s=1.0)
    assert list(loaded) == [] and loaded.skipped == 12  # never trained on
    stack.store.set_private(ids[3], False)
    item = next(iter(PairStream(stack.settings, store_pixels(stack.settings), idle_s=1.0)))
    assert item["query"].shape == (3, 224, 224) and item["negatives"].shape == (1, 3, 224, 224)
