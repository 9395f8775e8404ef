"""The feedback state of a process: one aggregator per partition, offsets, checkpoints.

Checkpoints make the aggregation exactly-once in effect across crashes: the
state of every partition and the next offset to consume are written together,
atomically (temporary file, fsync, rename) with a SHA-256 over the content. A
restart loads the checkpoint and consumes from its offsets; a checkpoint that
fails its checksum is ignored and the log is replayed from the beginning,
which gives the same counters (the state is a function of the log).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from feedback.aggregation import AggregationPolicy, Outcome, PartitionAggregator
from feedback.summary import FeedbackView
from streams.atomic_file import atomic_write_chunks
from streams.errors import VisearchError
from streams.schemas import Interaction

log = logging.getLogger(__name__)

MAGIC = b"VISFEED1"


class CheckpointError(VisearchError, RuntimeError):
    """A checkpoint is unreadable, corrupt or from another log epoch."""


class FeedbackState:
    """Aggregators and consumed offsets of the partitions this process owns; thread-safe."""

    def __init__(self, partitions: Iterable[int], policy: AggregationPolicy | None = None) -> None:
        self.policy = policy or AggregationPolicy()
        self.aggregators = {p: PartitionAggregator(self.policy) for p in partitions}
        self.offsets = dict.fromkeys(self.aggregators, 0)
        self.epoch = ""
        self.pairs_emitted = 0
        self.lock = threading.Lock()

    def process(
        self, partition: int, records: list[tuple[int, Interaction | None, float]]
    ) -> list[Outcome | None]:
        """Aggregate ``(offset, event, record_time)`` records of one partition, in order.

        ``event`` is None for an undecodable record: only the offset moves. One
        lock acquisition per batch keeps scrapes consistent without a per-event cost.
        """
        outcomes: list[Outcome | None] = []
        with self.lock:
            aggregator = self.aggregators[partition]
            for offset, event, record_time in records:
                self.offsets[partition] = offset + 1
                if event is None:
                    outcomes.append(None)
                    continue
                outcome = aggregator.process(event, record_time)
                self.pairs_emitted += len(outcome.pairs)
                outcomes.append(outcome)
        return outcomes

    def view(self) -> FeedbackView:
        """A view over the live aggregators: call under :attr:`lock` for consistency."""
        return FeedbackView(self.aggregators.values())

    def summary(self) -> dict[str, Any]:
        with self.lock:
            summary = self.view().summary()
            summary["pairs_emitted"] = self.pairs_emitted
            summary["offsets"] = {str(p): o for p, o in sorted(self.offsets.items())}
            return summary

    # ------------------------------------------------------------- checkpoints

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "epoch": self.epoch,
                "offsets": {str(p): o for p, o in self.offsets.items()},
                "pairs_emitted": self.pairs_emitted,
                "partitions": {str(p): a.to_json() for p, a in self.aggregators.items()},
            }

    def save(self, path: Path) -> None:
        body = zlib.compress(json.dumps(self.to_json(), separators=(",", ":")).encode(), 1)
        digest = hashlib.sha256(body).hexdigest().encode()
        atomic_write_chunks(path, (MAGIC, digest, body))

    def load(self, path: Path, epoch: str) -> dict[int, int]:
        """Restore from ``path`` if it is intact and of ``epoch``; returns start offsets.

        Without a usable checkpoint every partition starts empty at offset 0.
        """
        self.epoch = epoch
        try:
            data = _read_checkpoint(path)
        except CheckpointError as exc:
            log.warning("feedback checkpoint not used, replaying the log: %s", exc)
            return dict(self.offsets)
        if data["epoch"] != epoch:
            log.info(
                "feedback checkpoint is from log epoch %s, replaying epoch %s", data["epoch"], epoch
            )
            return dict(self.offsets)
        with self.lock:
            for key, raw in data["partitions"].items():
                partition = int(key)
                if partition in self.aggregators:
                    self.aggregators[partition] = PartitionAggregator.from_json(raw, self.policy)
                    self.offsets[partition] = int(data["offsets"][key])
            self.pairs_emitted = int(data["pairs_emitted"])
            return dict(self.offsets)

    def begin_epoch(self, epoch: str) -> dict[int, int]:
        """The interactions log became a new epoch while running: keep the state, read it from 0.

        The aggregates are a view of a log that no longer exists (the
        embedded broker lost it), so they are kept, as the index keeps its
        vectors: dropping them would lose every count before the restart,
        and counters must not go backwards. The new log is new events, and
        records re-read from it are dropped by the ``event_id`` dedup. The
        next checkpoint records the new epoch with the new log's offsets.
        """
        with self.lock:
            self.epoch = epoch
            self.offsets = dict.fromkeys(self.aggregators, 0)
            return dict(self.offsets)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} does not exist") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a feedback checkpoint")
    digest, body = raw[len(MAGIC) : len(MAGIC) + 64], raw[len(MAGIC) + 64 :]
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CheckpointError(f"{path} fails its checksum: truncated or corrupt")
    try:
        data: dict[str, Any] = json.loads(zlib.decompress(body))
    except (ValueError, zlib.error) as exc:
        raise CheckpointError(f"{path} cannot be decoded: {exc}") from exc
    return data
