"""The ``visearch`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streams.process_tuning import tune_process
from streams.settings import Settings, SettingsError
from visearch.catalog.corpus import DEMO_CORPUS
from visearch.cli.model import add_model_parser
from visearch.evaluation.commands import add_eval_parser
from visearch.models.training import add_train_parser

if TYPE_CHECKING:
    from streams.schemas import DeadLetter

log = logging.getLogger("visearch")


def _cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.broker import EmbeddedBroker

    broker = EmbeddedBroker(settings.broker_host, settings.broker_port).start()
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    print(f"embedded broker on {broker.bootstrap_servers} (Ctrl-C stops it)", flush=True)
    try:
        return broker.wait()
    except KeyboardInterrupt:
        broker.stop()
        return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.processes.worker import run_worker

    run_worker(settings, loglevel=args.loglevel)
    return 0


def _cmd_shard(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.processes.shards import run_shard_process

    if args.id is not None:
        settings = settings.with_overrides(shard_id=args.id)
    run_shard_process(settings)
    return 0


def _cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from encoders.export import export_pretrained
    from visearch.catalog.corpus import find_images

    out = args.out or settings.resolved_model_dir
    images = find_images(args.images)[: args.parity_images]
    metadata = export_pretrained(out, [p.read_bytes() for p in images])
    print(json.dumps({"model_dir": str(out), "version": metadata.version, **metadata.parity}))
    return 0


def _cmd_quantize(settings: Settings, args: argparse.Namespace) -> int:
    import random

    from encoders.quantize import quantize_int8
    from visearch.catalog.corpus import find_images

    source = args.model or settings.resolved_model_dir
    out = args.out or source.with_name(source.name + "-int8")
    images = find_images(args.images)
    random.Random(0).shuffle(images)
    calibration = [p.read_bytes() for p in images[: args.calibration_images]]
    evaluation = [p.read_bytes() for p in images[args.calibration_images :][:64]]
    metadata = quantize_int8(source, out, calibration, evaluation)
    print(json.dumps({"model_dir": str(out), "version": metadata.version, **metadata.parity}))
    return 0


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.local.runner import run_service

    run_service(settings, None if args.no_demo else args.demo, args.demo)
    return 0


def _cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.local.runner import run_api

    run_api(settings)
    return 0


def _cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from streams.topics import ensure_topics, topic_specs

    ensure_topics(settings)
    for spec in topic_specs(settings):
        print(json.dumps({"topic": spec.name, "partitions": spec.partitions}))
    return 0


def _cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from streams.publisher import EventPublisher
    from streams.topics import ensure_topics
    from visearch.catalog.store import ImageStore
    from visearch.local.ingest import ingest_folder

    ensure_topics(settings)
    with EventPublisher(settings) as publisher:
        summary = ingest_folder(
            settings, ImageStore(settings.image_store_dir), publisher, args.folder, args.owner
        )
    print(
        json.dumps(
            {
                "published": summary.published,
                "already_stored": summary.already_stored,
                "rejected": summary.rejected,
            }
        )
    )
    return 0


def _cmd_selftest(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.local.selftest import run_selftest

    report = run_selftest(settings, args.images, count=args.count, crop_area=args.crop_area)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        for key, value in report.as_dict().items():
            print(f"{key:>14}: {value}")
    return 0 if report.ok else 1


def _read_selected(settings: Settings, args: argparse.Namespace) -> list[tuple[int, DeadLetter]]:
    from streams.dead_letters import read_dead_letters, select

    limit = getattr(args, "limit", None)
    # With --code the limit counts matching letters, so the whole range is read.
    letters = read_dead_letters(
        settings, from_offset=args.from_offset, limit=None if args.code else limit
    )
    return select(letters, args.code, limit)


def _print_letters(
    letters: list[tuple[int, DeadLetter]], as_json: bool = False, with_payload: bool = False
) -> None:
    from streams.dead_letters import format_table, letter_json, summarize

    if as_json:
        for offset, letter in letters:
            print(letter_json(offset, letter, with_payload))
        return
    if not letters:
        print("no dead letters")
        return
    for line in format_table(letters):
        print(line)
    counts = ", ".join(f"{code} {count}" for code, count in summarize(letters).items())
    print(f"{len(letters)} dead letters ({counts}); next offset {letters[-1][0] + 1}")


def _cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    _print_letters(_read_selected(settings, args), args.json, args.with_payload)
    return 0


def _cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from streams.dead_letters import replay, summarize
    from streams.publisher import EventPublisher

    letters = _read_selected(settings, args)
    if not args.yes:
        _print_letters(letters)
        if letters:
            print(f"would replay {len(letters)} dead letters; run again with --yes to replay them")
        return 0
    replayed = 0
    if letters:
        with EventPublisher(settings) as publisher:
            replayed = replay(settings, letters, publisher)
    report = {
        "replayed": replayed,
        "skipped": len(letters) - replayed,
        "by_code": summarize(letters),
        "next_offset": letters[-1][0] + 1 if letters else args.from_offset,
    }
    print(json.dumps(report))
    return 0


def _cmd_feedback(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.processes.feedback import run_feedback_process

    run_feedback_process(settings)
    return 0


def _cmd_feedback_export(settings: Settings, args: argparse.Namespace) -> int:
    from feedback.trainer_feed import INTERACTIONS, PAIRS, export_log

    export = {"pairs": PAIRS, "interactions": INTERACTIONS}[args.command]
    summary = export_log(
        settings, export, args.out, args.from_offset, args.since, args.idle_s, args.format
    )
    print(json.dumps({"out": str(args.out), **vars(summary)}))
    return 0


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from feedback.simulate import (
        ApiClient,
        Relevance,
        folder_relevance,
        is_relevant,
        qrels_relevance,
        simulate,
    )
    from visearch.catalog.corpus import CorpusError, image_folders
    from visearch.evaluation.dataset import EvalSetError, read_qrels

    url = args.url or f"http://{settings.http_host}:{settings.http_port}"
    relevant: Relevance = is_relevant
    try:
        if args.qrels is not None:
            relevant = qrels_relevance(read_qrels(args.qrels))
        elif args.source is not None or DEMO_CORPUS.is_dir():
            relevant = folder_relevance(image_folders(args.source or DEMO_CORPUS))
    except (OSError, EvalSetError, CorpusError) as exc:
        print(f"visearch: {exc}", file=sys.stderr)
        return 1
    report = simulate(
        ApiClient(url), args.sessions, args.users, args.k, args.rate, args.seed, relevant=relevant
    )
    print(json.dumps(report.as_json()))
    return 0


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def _add_export_parser(
    sub: argparse._SubParsersAction, topic: str, help_text: str, records: str
) -> None:
    """``visearch TOPIC export``: one of the feedback topics to a JSONL file."""
    parser = sub.add_parser(topic, help=help_text)
    commands = parser.add_subparsers(dest=f"{topic}_command", required=True)
    export = commands.add_parser("export", help=f"write {topic} to a JSONL or Parquet file")
    export.add_argument("--out", type=Path, required=True, help="file to write")
    export.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        help="default: parquet for a .parquet file, else JSON Lines",
    )
    export.add_argument(
        "--from-offset", type=_non_negative, default=0, help="first offset of every partition"
    )
    export.add_argument("--since", type=float, help=f"only {records} at or after this Unix time")
    export.add_argument(
        "--idle-s", type=float, default=2.0, help="stop after the topic is idle this long"
    )
    export.set_defaults(func=_cmd_feedback_export)


def _add_service_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The long-running processes of a deployment: broker, worker, shard."""
    sub.add_parser("broker", help="run the embedded Kafka-compatible broker").set_defaults(
        func=_cmd_broker
    )

    worker = sub.add_parser("worker", help="run the Faust embedding worker")
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(func=_cmd_worker)

    shard = sub.add_parser("shard", help="run one index shard as its own process (HTTP)")
    shard.add_argument("--id", type=int, help="shard id (default: VISEARCH_SHARD_ID or $HOSTNAME)")
    shard.set_defaults(func=_cmd_shard)


def _add_model_file_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Producing model directories: ONNX export and int8 quantisation."""
    export = sub.add_parser("export", help="export the pretrained encoder to ONNX with parity")
    export.add_argument("--out", type=Path, help="model directory (default: settings)")
    export.add_argument("--images", type=Path, default=DEMO_CORPUS, help="real images for parity")
    export.add_argument("--parity-images", type=int, default=16)
    export.set_defaults(func=_cmd_export)

    quantize = sub.add_parser(
        "quantize", help="static int8 quantisation, calibrated on real images"
    )
    quantize.add_argument("--model", type=Path, help="fp32 model directory (default: settings)")
    quantize.add_argument("--out", type=Path, help="output directory (default: <model>-int8)")
    quantize.add_argument("--images", type=Path, default=DEMO_CORPUS, help="real images")
    quantize.add_argument("--calibration-images", type=int, default=128)
    quantize.set_defaults(func=_cmd_quantize)


def _add_local_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The single-machine stack and its helpers: run, api, topics, ingest, selftest."""
    run = sub.add_parser("run", help="broker + worker + index + search API on this machine")
    run.add_argument("--demo", type=Path, default=DEMO_CORPUS, help="demo corpus folder")
    run.add_argument("--no-demo", action="store_true", help="serve only stored images")
    run.set_defaults(func=_cmd_run)

    sub.add_parser(
        "api", help="the search API alone (workers and shards run elsewhere, as in Helm)"
    ).set_defaults(func=_cmd_api)

    sub.add_parser(
        "topics", help="create missing topics, check partition counts, print them"
    ).set_defaults(func=_cmd_topics)

    ingest = sub.add_parser("ingest", help="store and publish a folder of images")
    ingest.add_argument("folder", type=Path)
    ingest.add_argument("--owner", default="ingest")
    ingest.set_defaults(func=_cmd_ingest)

    selftest = sub.add_parser(
        "selftest", help="end-to-end check: upload -> searchable -> crop query"
    )
    selftest.add_argument("--json", action="store_true", help="print one JSON object")
    selftest.add_argument("--images", type=Path, default=DEMO_CORPUS, help="real photos to use")
    selftest.add_argument("--count", type=int, default=24)
    selftest.add_argument("--crop-area", type=float, default=0.5)
    selftest.set_defaults(func=_cmd_selftest)


def _add_dlq_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Dead letters: list them, replay them."""
    dlq = sub.add_parser("dlq", help="list and replay dead letters (events that failed)")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="show dead letters with their reasons")
    dlq_replay = dlq_sub.add_parser(
        "replay", help="republish dead letters' original bytes to their source topics"
    )
    for command in (dlq_list, dlq_replay):
        command.add_argument(
            "--from-offset", type=_non_negative, default=0, help="first dead-letter offset"
        )
        command.add_argument(
            "--code", action="append", help="only this error code (repeatable), e.g. missing_file"
        )
    dlq_list.add_argument("--limit", type=_non_negative, help="at most N dead letters")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dlq_list.add_argument(
        "--with-payload", action="store_true", help="with --json: include original_b64"
    )
    dlq_list.set_defaults(func=_cmd_dlq_list)
    dlq_replay.add_argument(
        "--yes", action="store_true", help="replay (without it: only show what would be replayed)"
    )
    dlq_replay.set_defaults(func=_cmd_dlq_replay)


def _add_feedback_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The feedback aggregator and the exports of what it produces."""
    sub.add_parser(
        "feedback", help="the feedback aggregator alone: CTR, time spent, labelled pairs"
    ).set_defaults(func=_cmd_feedback)

    _add_export_parser(sub, "pairs", "labelled pairs for trainers", "pairs created")
    _add_export_parser(
        sub,
        "interactions",
        "the interactions log (impressions, clicks, dwell): click-derived judgements",
        "events",
    )


def _add_simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Simulated search sessions with clicks against a running API."""
    simulate = sub.add_parser(
        "simulate-traffic", help="realistic search sessions with clicks against a running API"
    )
    simulate.add_argument("--url", help="API base URL (default: VISEARCH_HTTP_HOST/PORT)")
    simulate.add_argument("--sessions", type=_non_negative, default=200)
    simulate.add_argument("--users", type=_non_negative, default=50)
    simulate.add_argument("--k", type=_non_negative, default=10, help="results per search")
    simulate.add_argument("--rate", type=float, default=0.0, help="sessions/s (0: flat out)")
    simulate.add_argument("--seed", type=_non_negative, default=0)
    simulate.add_argument(
        "--qrels",
        type=Path,
        help="truly similar = judged relevant in this TREC qrels file (e.g. an eval set's); "
        "default: same folder of --source",
    )
    simulate.add_argument(
        "--source",
        type=Path,
        help="the folder the images were ingested from (ids as `visearch ingest` names them): "
        f"truly similar = same sub-folder; default {DEMO_CORPUS}",
    )
    simulate.set_defaults(func=_cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visearch",
        description="Real-time visual search. Configure with VISEARCH_* environment variables.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_service_parsers(sub)
    _add_model_file_parsers(sub)
    _add_local_parsers(sub)
    _add_dlq_parser(sub)
    _add_feedback_parsers(sub)
    _add_simulate_parser(sub)
    add_eval_parser(sub)
    add_model_parser(sub)
    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"visearch: configuration error: {exc}", file=sys.stderr)
        return 2
    tune_process(settings)
    try:
        return int(args.func(settings, args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from encoders.export import TrainExtraMissingError
        from streams.broker import BrokerError
        from streams.dead_letters import DeadLetterError
        from visearch.catalog.corpus import CorpusError
        from visearch.cli.model import ModelCommandError
        from visearch.evaluation.dataset import EvalSetError
        from visearch.models.backfill import BackfillError

        known = (BrokerError, CorpusError, DeadLetterError, EvalSetError, TrainExtraMissingError)
        if isinstance(exc, (*known, BackfillError, ModelCommandError)):
            print(f"visearch: {exc}", file=sys.stderr)
            return 1
        raise
