"""Dead-letter selection, summaries, formatting, replay and the CLI, without Kafka."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from streams import dead_letters
from streams.dead_letters import (
    format_table,
    letter_json,
    letter_record,
    replay,
    select,
    summarize,
)
from streams.schemas import DeadLetter
from streams.settings import Settings
from visearch.cli import main as cli

SETTINGS = Settings(topic_prefix="t")
UPLOADS = SETTINGS.topics.uploads
UPDATES = SETTINGS.topics.updates


def _letter(
    code: str, original: bytes = b"{}", topic: str = UPLOADS, offset: int = 0
) -> DeadLetter:
    return DeadLetter(
        source_topic=topic,
        partition=2,
        offset=offset,
        error_code=code,
        message=f"reason for {code}\nsecond line",
        original_b64=base64.b64encode(original).decode(),
        failed_at=1_700_000_000.5,
    )


LETTERS = [
    (0, _letter("not_json", b"{broken")),
    (1, _letter("missing_file", b'{"a":1}', offset=7)),
    (2, _letter("invalid_value", b'{"u":1}', topic=UPDATES)),
    (5, _letter("missing_file", b'{"a":2}', offset=9)),
]


class FakeFuture:
    def get(self, timeout: float) -> None:
        pass


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = False

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture()

    def flush(self, timeout_s: float = 30.0) -> None:
        self.flushed = True


def test_summarize_counts_by_code_most_frequent_first() -> None:
    counts = summarize(LETTERS)
    assert counts == {"missing_file": 2, "invalid_value": 1, "not_json": 1}
    assert list(counts) == ["missing_file", "invalid_value", "not_json"]
    assert summarize([]) == {}


def test_select_filters_by_codes_then_limits() -> None:
    assert select(LETTERS) == LETTERS
    assert [o for o, _ in select(LETTERS, ["missing_file"])] == [1, 5]
    assert [o for o, _ in select(LETTERS, {"missing_file", "not_json"})] == [0, 1, 5]
    assert [o for o, _ in select(LETTERS, ["missing_file"], limit=1)] == [1]
    assert [o for o, _ in select(LETTERS, None, limit=2)] == [0, 1]
    assert select(LETTERS, ["no_such_code"]) == []
    assert select(LETTERS, []) == LETTERS  # no codes given: everything


def test_letter_record_leaves_the_payload_out_unless_asked() -> None:
    offset, letter = LETTERS[1]
    record = letter_record(offset, letter)
    assert record["dlq_offset"] == 1 and record["offset"] == 7
    assert record["error_code"] == "missing_file"
    assert "original_b64" not in record
    full = json.loads(letter_json(offset, letter, with_payload=True))
    assert base64.b64decode(full["original_b64"]) == b'{"a":1}'
    assert set(full) == {"dlq_offset", *letter._options.fields}


def test_format_table_one_aligned_line_per_letter() -> None:
    lines = format_table(LETTERS, message_width=20)
    assert len(lines) == 1 + len(LETTERS)
    assert lines[0].split() == ["OFFSET", "TIME", "(UTC)", "SOURCE", "CODE", "MESSAGE"]
    assert "2023-11-14T22:13:20Z" in lines[1]
    assert f"{UPLOADS}/2@7" in lines[2]
    assert "\n" not in "".join(lines)  # multi-line messages are folded
    assert lines[1].endswith("reason for not_json…")
    starts = [lines[0].index("TIME"), *(line.index("2023-") for line in lines[1:])]
    assert len(set(starts)) == 1  # columns are aligned


def test_replay_sends_original_bytes_without_key_to_source_topics() -> None:
    publisher = FakePublisher()
    foreign = (9, _letter("not_json", b"x", topic="other.image-uploads"))
    not_base64 = (10, _letter("not_json"))
    not_base64[1].original_b64 = "%%%"
    count = replay(SETTINGS, [*LETTERS, foreign, not_base64], publisher)
    assert count == len(LETTERS)
    assert publisher.sent == [
        (UPLOADS, None, b"{broken"),
        (UPLOADS, None, b'{"a":1}'),
        (UPDATES, None, b'{"u":1}'),
        (UPLOADS, None, b'{"a":2}'),
    ]
    assert publisher.flushed


def test_cli_parses_dlq_commands() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["dlq", "list", "--from-offset", "3", "--code", "a", "--code", "b"])
    assert (args.func, args.from_offset, args.code, args.limit) == (
        cli._cmd_dlq_list,
        3,
        ["a", "b"],
        None,
    )
    args = parser.parse_args(["dlq", "replay", "--yes"])
    assert (args.func, args.from_offset, args.code, args.yes) == (
        cli._cmd_dlq_replay,
        0,
        None,
        True,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["dlq", "list", "--limit", "-1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["dlq"])


@pytest.fixture
def fake_topic(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """``read_dead_letters`` answers from LETTERS; returns the calls it got."""
    calls: list[dict[str, object]] = []

    def fake_read(settings: Settings, from_offset: int = 0, limit: int | None = None, **_: object):
        calls.append({"from_offset": from_offset, "limit": limit})
        found = [item for item in LETTERS if item[0] >= from_offset]
        return found if limit is None else found[:limit]

    monkeypatch.setattr(dead_letters, "read_dead_letters", fake_read)
    return calls


def test_cli_list_json_filters_by_code_and_limits_matches(
    fake_topic: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(
        ["dlq", "list", "--json", "--code", "missing_file", "--limit", "1"]
    )
    assert cli._cmd_dlq_list(SETTINGS, args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["dlq_offset"] for line in lines] == [1]
    assert fake_topic == [{"from_offset": 0, "limit": None}]  # the limit counts matches


def test_cli_list_table_ends_with_a_summary(
    fake_topic: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(["dlq", "list", "--from-offset", "1", "--limit", "2"])
    assert cli._cmd_dlq_list(SETTINGS, args) == 0
    out = capsys.readouterr().out.splitlines()
    assert fake_topic == [{"from_offset": 1, "limit": 2}]
    assert len(out) == 4
    assert out[-1] == "2 dead letters (invalid_value 1, missing_file 1); next offset 3"


def test_cli_replay_without_yes_only_shows(
    fake_topic: list[dict[str, object]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    def no_publishing(*_: object) -> int:
        raise AssertionError("replayed without --yes")

    monkeypatch.setattr(dead_letters, "replay", no_publishing)
    args = cli.build_parser().parse_args(["dlq", "replay", "--code", "missing_file"])
    assert cli._cmd_dlq_replay(SETTINGS, args) == 0
    out = capsys.readouterr().out
    assert "would replay 2 dead letters" in out and "--yes" in out
