"""The trainer feed: labelled pairs from the labelled-pairs topic to a training file.

A plain kafka-python consumer with manual assignment, so a trainer needs no
consumer group and can start anywhere: ``from_offset`` (every partition) or
``since`` (pairs created at or after an event time). The embedded broker
cannot answer end offsets correctly (DESIGN.md), so the export reads until
the topic has been idle for ``idle_s``. Pairs are deduplicated by
``pair_id`` (the aggregator may publish a pair again after a crash).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streams.log_follower import read_until_idle
from streams.schemas import LabeledPair, SchemaError, decode, encode
from streams.settings import Settings


@dataclass(frozen=True)
class ExportSummary:
    written: int
    duplicates: int
    skipped_before_since: int
    undecodable: int
    next_offsets: dict[int, int]


def read_pairs(
    settings: Settings, from_offset: int = 0, idle_s: float = 2.0
) -> Iterator[tuple[int, int, bytes]]:
    """``(partition, offset, value)`` of every record from ``from_offset`` until idle."""
    records = read_until_idle(
        settings.kafka,
        settings.topics.labeled_pairs,
        range(settings.interaction_partitions),
        from_offset,
        idle_s,
        settings.fetch_max_wait_ms,
        "visearch-pairs-export",
    )
    for record in records:
        yield record.partition, record.offset, record.value or b""


def export_pairs(
    settings: Settings,
    out: Path,
    from_offset: int = 0,
    since: float | None = None,
    idle_s: float = 2.0,
) -> ExportSummary:
    """Write one JSON object per line (the LabeledPair fields) to ``out``."""
    seen: set[str] = set()
    written = duplicates = early = bad = 0
    next_offsets: dict[int, int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for partition, offset, value in read_pairs(settings, from_offset, idle_s):
            next_offsets[partition] = offset + 1
            try:
                pair = decode(LabeledPair, value)
            except SchemaError:
                bad += 1
                continue
            if since is not None and pair.created_at < since:
                early += 1
            elif pair.pair_id in seen:
                duplicates += 1
            else:
                seen.add(pair.pair_id)
                handle.write(encode(pair).decode() + "\n")
                written += 1
    return ExportSummary(written, duplicates, early, bad, dict(sorted(next_offsets.items())))


def load_pairs(path: Path) -> list[LabeledPair]:
    """Pairs from an exported JSONL file (for ``visearch train --pairs``)."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                pairs.append(decode(LabeledPair, line))
            except SchemaError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from exc
    return pairs
