"""The trainer feed: feedback topics (labelled pairs, raw interactions) to JSONL or Parquet.

A plain kafka-python consumer with manual assignment, so a trainer needs no
consumer group and can start anywhere: ``from_offset`` (every partition) or
``since`` (records at or after an event time). The embedded broker (Tansu)
answers ListOffsets wrongly after batched writes, so end offsets cannot be
trusted and an export reads until the topic
has been idle for ``idle_s``. Records are deduplicated by their identity
(``pair_id``: the aggregator may publish a pair again after a crash;
``event_id``: a client may send an interaction twice), as the aggregator
itself does.

Two exports share that loop: labelled pairs (``visearch pairs export``, for
``visearch train --pairs``) and the interactions log itself
(``visearch interactions export``): impressions *and* clicks, which
click-derived judgements need to tell what users did not click from what
they were never shown (:mod:`feedback.click_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from feedback.record_files import format_of, iter_records, open_writer
from streams.log_follower import read_until_idle
from streams.schemas import Event, Interaction, LabeledPair, SchemaError, decode
from streams.settings import Settings

Record = TypeVar("Record", bound=Event)


@dataclass(frozen=True)
class ExportSummary:
    written: int
    duplicates: int
    skipped_before_since: int
    undecodable: int
    next_offsets: dict[int, int]


@dataclass(frozen=True)
class LogExport(Generic[Record]):
    """What differs between the exported topics: schema, identity and event time."""

    schema: type[Record]
    topic: Callable[[Settings], str]
    identity: Callable[[Record], str]
    event_time: Callable[[Record], float]
    client_id: str


PAIRS = LogExport(
    LabeledPair,
    lambda settings: settings.topics.labeled_pairs,
    lambda pair: pair.pair_id,
    lambda pair: pair.created_at,
    "visearch-pairs-export",
)
INTERACTIONS = LogExport(
    Interaction,
    lambda settings: settings.topics.interactions,
    lambda event: event.event_id,
    lambda event: event.timestamp,
    "visearch-interactions-export",
)


def read_records(
    settings: Settings, export: LogExport[Record], from_offset: int = 0, idle_s: float = 2.0
) -> Iterator[tuple[int, int, bytes]]:
    """``(partition, offset, value)`` of every record from ``from_offset`` until idle."""
    records = read_until_idle(
        settings.kafka,
        export.topic(settings),
        range(settings.interaction_partitions),
        from_offset,
        idle_s,
        settings.fetch_max_wait_ms,
        export.client_id,
    )
    for record in records:
        yield record.partition, record.offset, record.value or b""


def export_log(
    settings: Settings,
    export: LogExport[Record],
    out: Path,
    from_offset: int = 0,
    since: float | None = None,
    idle_s: float = 2.0,
    file_format: str | None = None,
) -> ExportSummary:
    """Write the records to ``out``: JSON Lines, or Parquet (``file_format``, else the
    ``.parquet`` suffix; :mod:`feedback.record_files`)."""
    seen: set[str] = set()
    written = duplicates = early = bad = 0
    next_offsets: dict[int, int] = {}
    with open_writer(out, export.schema, format_of(out, file_format)) as writer:
        for partition, offset, value in read_records(settings, export, from_offset, idle_s):
            next_offsets[partition] = offset + 1
            try:
                record = decode(export.schema, value)
            except SchemaError:
                bad += 1
                continue
            if since is not None and export.event_time(record) < since:
                early += 1
            elif export.identity(record) in seen:
                duplicates += 1
            else:
                seen.add(export.identity(record))
                writer.write(record)
                written += 1
    return ExportSummary(written, duplicates, early, bad, dict(sorted(next_offsets.items())))


def load_records(path: Path, schema: type[Record]) -> list[Record]:
    """Records from an exported JSONL or Parquet file; one that does not decode is an error."""
    return list(iter_records(path, schema))


def load_pairs(path: Path) -> list[LabeledPair]:
    """Pairs from an exported JSONL file (for ``visearch train --pairs``)."""
    return load_records(path, LabeledPair)


def load_interactions(path: Path) -> list[Interaction]:
    """Interactions from an exported JSONL file."""
    return load_records(path, Interaction)
