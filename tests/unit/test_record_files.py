"""Exported records as JSON Lines and as Parquet: the same records either way."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feedback.record_files import format_of, iter_records, open_writer
from streams.schemas import Interaction, LabeledPair


def _pair(n: int) -> LabeledPair:
    return LabeledPair(
        pair_id=f"s{n}-2", search_id=f"s{n}", query_image_id="q", positive_image_id=f"p{n}",
        position=2, weight=0.5 * n, model_version="m", created_at=1765000000.0 + n,
        negative_image_ids=None if n % 3 == 0 else [f"n{n}", "n-x"],
    )  # fmt: skip


def _pairs() -> list[LabeledPair]:
    return [_pair(n) for n in range(25)]


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_records_round_trip_and_resume_from_a_row(tmp_path: Path, file_format: str) -> None:
    path = tmp_path / f"pairs.{file_format}"
    with open_writer(path, LabeledPair, file_format) as writer:
        for pair in _pairs():
            writer.write(pair)
    assert list(iter_records(path, LabeledPair)) == _pairs()
    assert list(iter_records(path, LabeledPair, start=20)) == _pairs()[20:]


def test_parquet_keeps_types_and_nulls(tmp_path: Path) -> None:
    event = Interaction(
        event_id="e1", user_id="u", search_id="s", query_image_id="", displayed_image_id="d",
        position=0, type="click", timestamp=1.5, lat=None, lon=2.25,
    )  # fmt: skip
    path = tmp_path / "events.parquet"
    with open_writer(path, Interaction, format_of(path)) as writer:
        writer.write(event)
    table = pq.read_table(path)
    assert str(table.schema.field("position").type) == "int64"
    assert table.column("lat").to_pylist() == [None] and table.column("lon").to_pylist() == [2.25]
    assert list(iter_records(path, Interaction)) == [event]


def test_formats_and_bad_files(tmp_path: Path) -> None:
    assert format_of(Path("a.parquet")) == "parquet" and format_of(Path("a.jsonl")) == "jsonl"
    assert format_of(Path("a.parquet"), "jsonl") == "jsonl"
    with pytest.raises(ValueError, match="format"):
        format_of(Path("a"), "csv")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pair_id": "x"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: missing_field"):
        list(iter_records(bad, LabeledPair))
