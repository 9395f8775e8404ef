"""``visearch pairs export`` and ``visearch interactions export`` share one handler,
which picks the topic description from the command."""

from visearch.cli.main import build_parser


def test_each_export_command_parses_to_its_own_topic() -> None:
    parser = build_parser()
    pairs = parser.parse_args(["pairs", "export", "--out", "p.jsonl", "--since", "5"])
    events = parser.parse_args(["interactions", "export", "--out", "i.jsonl"])
    assert pairs.func is events.func
    assert (pairs.command, events.command) == ("pairs", "interactions")
    assert (pairs.since, events.since, events.from_offset, events.idle_s) == (5.0, None, 0, 2.0)
    assert parser.parse_args(["export"]).func is not pairs.func  # the encoder export
