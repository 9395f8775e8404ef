"""Labelled click pairs as a PyTorch ``IterableDataset``: from an export file or the topic.

Training code wants batches, not a topic: this streams ``LabeledPair`` records
from a JSONL or Parquet export (``visearch pairs export``) or straight from
``<prefix>.labeled-pairs``, each as a dict of the pair's ids and weight and,
when a ``load`` function is given, the query's, positive's and negatives'
pixels or vectors (e.g. :func:`store_pixels`: preprocessed images from the
image store). Pairs naming an image ``load`` cannot give (deleted, private,
unknown) are skipped and counted, never trained on.

Resumable: ``state_dict()`` after an item says where the stream stands (the
next row of a file, or the next offset of every partition of the topic, and
the pair ids already seen, since the aggregator may publish a pair again
after a crash); a new dataset given that state with ``load_state_dict`` goes
on with the next pair, without repeating or skipping one (tested). One
worker: the stream is ordered (use ``num_workers=0`` in the DataLoader).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from feedback.record_files import iter_records
from streams.log_follower import read_until_idle
from streams.schemas import LabeledPair, SchemaError, decode
from streams.settings import Settings

Load = Callable[[str], np.ndarray]


class PairStream(IterableDataset[dict[str, Any]]):
    """Labelled pairs from ``source``: an export file (Path) or the topic (Settings)."""

    def __init__(
        self,
        source: Path | Settings,
        load: Load | None = None,
        max_negatives: int | None = None,
        idle_s: float = 2.0,
    ) -> None:
        self.source = source
        self.load = load
        self.max_negatives = max_negatives
        self.idle_s = idle_s
        self.row = 0  # a file's next row
        self.offsets: dict[int, int] = {}  # the topic's next offset per partition
        self.seen: set[str] = set()
        self.skipped = 0  # pairs naming an image that load could not give

    def state_dict(self) -> dict[str, Any]:
        return {"row": self.row, "offsets": dict(self.offsets), "seen": sorted(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.row = int(state["row"])
        self.offsets = {int(p): int(o) for p, o in state["offsets"].items()}
        self.seen = set(state["seen"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for pair in self.records():
            item = self._item(pair)
            if item is not None:
                yield item

    def records(self) -> Iterator[LabeledPair]:
        """The pairs themselves, once each (``visearch train --pairs`` reads them so)."""
        for pair in self._pairs():
            if pair.pair_id not in self.seen:
                self.seen.add(pair.pair_id)
                yield pair

    def _pairs(self) -> Iterator[LabeledPair]:
        """Pairs from where the stream stands, advancing it as each is handed out."""
        if isinstance(self.source, Path):
            for pair in iter_records(self.source, LabeledPair, self.row):
                self.row += 1
                yield pair
            return
        settings = self.source
        records = read_until_idle(
            settings.kafka,
            settings.topics.labeled_pairs,
            range(settings.interaction_partitions),
            dict(self.offsets),
            self.idle_s,
            settings.fetch_max_wait_ms,
            "visearch-pair-stream",
        )
        for record in records:
            self.offsets[record.partition] = record.offset + 1
            try:
                yield decode(LabeledPair, record.value or b"")
            except SchemaError:
                continue  # the aggregator writes valid pairs; another writer's junk is skipped

    def _item(self, pair: LabeledPair) -> dict[str, Any] | None:
        negatives = list(pair.negative_image_ids or [])[: self.max_negatives]
        item: dict[str, Any] = {
            "pair_id": pair.pair_id,
            "query_id": pair.query_image_id,
            "positive_id": pair.positive_image_id,
            "negative_ids": negatives,
            "weight": pair.weight,
            "position": pair.position,
        }
        if self.load is None:
            return item
        try:
            item["query"] = self.load(pair.query_image_id)
            item["positive"] = self.load(pair.positive_image_id)
            loaded = [self.load(image_id) for image_id in negatives]
        except KeyError:
            self.skipped += 1
            return None
        item["negatives"] = np.stack(loaded) if loaded else np.empty((0,), np.float32)
        return item


def store_pixels(settings: Settings) -> Load:
    """Preprocessed pixels (3 x 224 x 224 float32) of visible images in the image store;
    ``KeyError`` for a deleted, private, flagged or unknown one."""
    from encoders.preprocess import ImageLimits, decode_image, preprocess_image
    from visearch.catalog.store import ImageStore, UnknownImageError

    store = ImageStore(settings.image_store_dir)
    limits = ImageLimits.from_settings(settings)

    def load(image_id: str) -> np.ndarray:
        try:
            if store.metadata(image_id).private or not store.visible(image_id):
                raise KeyError(image_id)
            return preprocess_image(decode_image(store.get(image_id), limits))
        except UnknownImageError as exc:
            raise KeyError(image_id) from exc

    return load
