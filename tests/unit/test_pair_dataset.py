"""The labelled-pairs IterableDataset over an export file: once each, resumable, loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedback.pair_dataset import PairStream
from feedback.record_files import open_writer
from streams.schemas import LabeledPair


def _pair(n: int) -> LabeledPair:
    return LabeledPair(
        pair_id=f"s{n}-1", search_id=f"s{n}", query_image_id=f"q{n}", positive_image_id=f"p{n}",
        position=1, weight=1.0 + n, model_version="m", created_at=1765000000.0 + n,
        negative_image_ids=[f"n{n}", f"m{n}", "hidden"] if n % 4 else [f"n{n}"],
    )  # fmt: skip


@pytest.fixture(params=["jsonl", "parquet"])
def export(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """20 pairs, pairs 3 and 7 published twice (an aggregator replay after a crash)."""
    path = tmp_path / f"pairs.{request.param}"
    with open_writer(path, LabeledPair, request.param) as writer:
        for n in [*range(10), 3, 7, *range(10, 20)]:
            writer.write(_pair(n))
    return path


def test_each_pair_once_and_a_resumed_stream_goes_on_with_the_next(export: Path) -> None:
    full = [item["pair_id"] for item in PairStream(export)]
    assert full == [f"s{n}-1" for n in range(20)]
    first = PairStream(export)
    head = []
    for item in first:
        head.append(item["pair_id"])
        if len(head) == 11:  # past the duplicates of 3 and 7 in the file
            break
    state = first.state_dict()
    resumed = PairStream(export)
    resumed.load_state_dict(state)
    assert head + [item["pair_id"] for item in resumed] == full


def test_loaded_examples_and_pairs_naming_hidden_images_are_skipped(export: Path) -> None:
    vectors = {f"{kind}{n}": np.full(4, n, np.float32) for n in range(20) for kind in "qpnm"}

    def load(image_id: str) -> np.ndarray:
        return vectors[image_id]  # KeyError for "hidden"

    stream = PairStream(export, load)
    items = list(stream)
    assert [item["pair_id"] for item in items] == [f"s{n}-1" for n in range(0, 20, 4)]
    assert stream.skipped == 15  # every pair with the hidden image among its negatives
    first = items[1]
    assert first["query"].tolist() == [4.0] * 4 and first["negatives"].shape == (1, 4)
    assert first["weight"] == 5.0 and first["negative_ids"] == ["n4"]
    capped = list(PairStream(export, load, max_negatives=2))  # the hidden one is cut off
    assert len(capped) == 20 and capped[1]["negatives"].shape == (2, 4)
