"""Exported records on disk: JSON Lines, or Parquet for training code.

JSONL is what any tool reads. Training pipelines (pandas, Polars, Spark,
PyTorch data loaders, DuckDB) want columns: Parquet keeps the types (ints,
floats, lists of ids), compresses the repeated ids and reads one column
without the others. The Arrow schema comes from the record class itself
(``streams.schemas.field_types``), so the two formats hold exactly the same
records: ``load`` of either gives equal objects (tested).

Parquet needs pyarrow (``pip install 'visearch[parquet]'``); JSONL needs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from streams.schemas import Event, SchemaError, decode, encode, field_types

Record = TypeVar("Record", bound=Event)
FORMATS = ("jsonl", "parquet")
ROW_GROUP = 10_000  # records per Parquet row group: bounded memory while writing


class RecordWriter(Protocol):
    def write(self, record: Event) -> None: ...

    def close(self) -> None: ...


def format_of(path: Path, explicit: str | None = None) -> str:
    """``explicit``, else from the suffix (``.parquet`` or anything else: JSONL)."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        return explicit
    return "parquet" if path.suffix == ".parquet" else "jsonl"


class JsonlWriter:
    """One compact JSON object per line, the record's fields."""

    def __init__(self, path: Path) -> None:
        self._handle: IO[str] = path.open("w")

    def write(self, record: Event) -> None:
        self._handle.write(encode(record).decode() + "\n")

    def close(self) -> None:
        self._handle.close()


def _arrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:  # an optional dependency
        raise RuntimeError("Parquet needs pyarrow: pip install 'visearch[parquet]'") from exc
    return pyarrow


def arrow_schema(schema: type[Event]) -> Any:
    """The Arrow schema of a record class, field by field in declaration order."""
    pa = _arrow()
    kinds = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    fields = []
    for name, field in field_types(schema).items():
        kind = pa.list_(pa.string()) if field.kind is list else kinds[field.kind]
        fields.append(pa.field(name, kind, nullable=field.nullable))
    return pa.schema(fields)


class ParquetWriter:
    """Columns of the record class's fields, written a row group at a time."""

    def __init__(self, path: Path, schema: type[Event]) -> None:
        pa = _arrow()
        self._pa = pa
        self._schema = arrow_schema(schema)
        self._rows: list[dict[str, Any]] = []
        self._writer = pa.parquet.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, record: Event) -> None:
        self._rows.append({name: getattr(record, name) for name in self._schema.names})
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            table = self._pa.Table.from_pylist(self._rows, schema=self._schema)
            self._writer.write_table(table)
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


@contextmanager
def open_writer(
    path: Path, schema: type[Event], file_format: str = "jsonl"
) -> Iterator[RecordWriter]:
    """``with open_writer(path, LabeledPair, "parquet") as writer: writer.write(pair)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer: RecordWriter = (
        ParquetWriter(path, schema) if file_format == "parquet" else JsonlWriter(path)
    )
    try:
        yield writer
    finally:
        writer.close()


def iter_records(path: Path, schema: type[Record], start: int = 0) -> Iterator[Record]:
    """The records of an exported file from the ``start``-th on, validated like a message
    (a bad line or row is an error naming it)."""
    if format_of(path) == "parquet":
        pq = _arrow().parquet
        number = 0
        for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=ROW_GROUP):
            for row in batch.to_pylist():
                if number >= start:
                    yield _validated(schema, row, f"{path}: row {number}")
                number += 1
        return
    with path.open() as handle:
        number = 0
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if number >= start:
                try:
                    yield decode(schema, line)
                except SchemaError as exc:
                    raise ValueError(f"{path}:{line_number}: {exc}") from exc
            number += 1


def _validated(schema: type[Record], row: dict[str, Any], where: str) -> Record:
    try:
        return decode(schema, json.dumps(row))
    except SchemaError as exc:
        raise ValueError(f"{where}: {exc}") from exc
