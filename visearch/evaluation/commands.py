"""The ``visearch eval`` command line: argument parsing and its four commands.

``visearch eval --corpus DIR --queries DIR --qrels FILE`` (or ``--set DIR``
for a builder's folder) evaluates; ``visearch eval build KIND`` makes a set;
``visearch eval report DIR...`` writes the HTML report; ``visearch eval
compare A B`` tests whether B beats A per query. Kept here so that
``visearch/cli/main.py`` only wires the subcommand in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from encoders.tiles import TILE_SCHEMES
from index.query_expansion import MAX_NEIGHBOURS
from index.query_windows import WINDOW_SCHEMES
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS
from visearch.evaluation.dataset import (
    EvalSetError,
    load_eval_set,
    set_dir_sources,
)

BUILDERS = ("crops", "edits", "classes", "fashion-mnist", "clicks", "photos")


def _depth(text: str) -> int:
    """``--depth``: a positive integer, or ``all`` (0 here: the whole corpus)."""
    if text == "all":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'all', got {text!r}")
    return int(text)


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``eval``, ``eval build`` and ``eval report`` on the CLI's subparsers."""
    ev = sub.add_parser(
        "eval",
        help="offline evaluation: metrics of a model and index on an image set",
        description="Embed, index and search an evaluation set with the service's code; "
        "write metrics.json, per_query.tsv and run.trec.",
    )
    _add_run_arguments(ev)
    ev.set_defaults(func=cmd_eval)
    ev_sub = ev.add_subparsers(dest="eval_command")

    _add_build_parser(ev_sub)

    report = ev_sub.add_parser("report", help="HTML report of one or more eval outputs")
    report.add_argument("runs", type=Path, nargs="+", help="eval --out folders")
    report.add_argument("--out", type=Path, default=Path("eval-report.html"))
    report.add_argument("--title", default="visearch evaluation")
    report.add_argument("--examples", type=int, default=8, help="example queries per run")
    report.set_defaults(func=cmd_report)

    compare = ev_sub.add_parser(
        "compare", help="paired bootstrap: B - A per query, with a 95 %% confidence interval"
    )
    compare.add_argument("a", type=Path, help="eval --out folder of the baseline")
    compare.add_argument("b", type=Path, help="eval --out folder of the candidate")
    compare.add_argument("--metric", default="ndcg_10", help="a per_query.tsv column")
    compare.add_argument("--samples", type=int, default=10_000, help="bootstrap resamples")
    compare.add_argument("--seed", type=int, default=0)
    compare.set_defaults(func=cmd_compare)


def _add_run_arguments(ev: argparse.ArgumentParser) -> None:
    """What ``visearch eval`` evaluates (a set, a model) and how (the search options)."""
    ev.add_argument("--corpus", type=Path, help="folder of corpus images (ids = file stems)")
    ev.add_argument("--queries", type=Path, help="folder of query images (ids = file stems)")
    ev.add_argument("--qrels", type=Path, help="TREC qrels: 'query 0 doc relevance' lines")
    ev.add_argument("--set", type=Path, help="a builder's folder (corpus/, queries/, qrels.txt)")
    ev.add_argument(
        "--filters",
        type=Path,
        help="corpus attributes and a filter per query (JSON; a --set's filters.json is read "
        "by itself): filtered queries are searched with their filter",
    )
    ev.add_argument(
        "--model", help="model directory, or raw-pixels (default: the one `visearch run` serves)"
    )
    ev.add_argument(
        "--tiles",
        nargs="?",
        const="quadrants",
        choices=TILE_SCHEMES,
        help="index tile vectors: none, quadrants (the default of a bare --tiles) or thirds "
        "(default: VISEARCH_TILES)",
    )
    ev.add_argument(
        "--index", default="service", help="service (default), exact, or a faiss factory string"
    )
    ev.add_argument("--partitions", type=int, help="default: VISEARCH_EMBEDDING_PARTITIONS")
    ev.add_argument("--depth", type=_depth, default=100, help="results per query, or 'all'")
    ev.add_argument(
        "--dedup",
        type=float,
        help="near-duplicate threshold on the base model's scale, translated for a "
        "trained model (>1: off)",
    )
    ev.add_argument(
        "--verify",
        type=int,
        metavar="N",
        help="pixel-verify the top N hits of each query, as VISEARCH_VERIFY_TOP (0: off; "
        "default: that setting)",
    )
    ev.add_argument(
        "--query-expansion",
        type=int,
        metavar="K",
        help="blend each query with its top K results and search again, as "
        "VISEARCH_QUERY_EXPANSION (0: off; default: that setting)",
    )
    ev.add_argument(
        "--query-windows",
        choices=WINDOW_SCHEMES,
        help="search unsure queries again with windows of the query, as "
        "VISEARCH_QUERY_WINDOWS (default: that setting)",
    )
    ev.add_argument(
        "--query-turns",
        action=argparse.BooleanOptionalAction,
        help="also search unsure queries turned by a quarter, as VISEARCH_QUERY_TURNS "
        "(default: that setting)",
    )
    ev.add_argument("--out", type=Path, default=Path("eval-out"), help="output folder")
    ev.add_argument("--label", help="name of this run in reports (default: the model version)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_build_parser(ev_sub: argparse._SubParsersAction) -> None:
    """``visearch eval build <kind>``: the set builders and their options."""
    build = ev_sub.add_parser("build", help="make an evaluation set from a folder")
    build.add_argument("kind", choices=BUILDERS)
    build.add_argument("--out", type=Path, required=True, help="new folder for the set")
    build.add_argument(
        "--source", type=Path, help=f"image folder (default {DEMO_CORPUS}; fashion-mnist: IDX)"
    )
    build.add_argument("--count", type=int, help="number of queries (default: all)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--negatives", type=int, default=0, help="edits: unmatched queries")
    build.add_argument("--level", type=int, default=1, help="classes: folder depth of a class")
    build.add_argument("--min-class", type=int, default=5, help="classes: smallest class kept")
    build.add_argument("--per-class", type=int, default=100, help="fashion-mnist: images/class")
    build.add_argument(
        "--split", help="fashion-mnist: t10k (default) or train; photos: tune or heldout"
    )
    build.add_argument("--crops", type=int, default=220, help="photos: hard crop queries")
    build.add_argument("--per-edit", type=int, default=20, help="photos: queries per edit kind")
    build.add_argument("--corpus-size", type=int, default=1000, help="photos: corpus images")
    build.add_argument(
        "--sources-out", type=Path, help="photos: TSV of every candidate file and its fate"
    )
    build.add_argument(
        "--pairs", type=Path, help="clicks: graded by sessions clicked (visearch pairs export)"
    )
    build.add_argument(
        "--interactions",
        type=Path,
        help="clicks: graded by a position-based click model (visearch interactions export)",
    )
    build.set_defaults(func=cmd_build)


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.evaluation.embedding import open_encoder
    from visearch.evaluation.outputs import write_outputs
    from visearch.evaluation.runner import EvalOptions, run_eval
    from visearch.models.serving import serving_model

    if args.set is not None:
        sources = set_dir_sources(args.set)
        if args.filters is not None:
            sources["filters"] = args.filters
        eval_set = load_eval_set(
            sources["corpus"], sources["queries"], sources["qrels"], sources.get("filters")
        )
    elif args.corpus and args.queries and args.qrels:
        sources = {"corpus": args.corpus, "queries": args.queries, "qrels": args.qrels}
        if args.filters is not None:
            sources["filters"] = args.filters
        eval_set = load_eval_set(args.corpus, args.queries, args.qrels, args.filters)
    else:
        raise EvalSetError("give --corpus, --queries and --qrels (or --set DIR)")
    model = args.model
    if model is None:  # the model `visearch run` serves: int8 where it agrees on this CPU
        model = serving_model(settings, DEMO_CORPUS).model_dir
    if args.query_expansion is not None and not 0 <= args.query_expansion <= MAX_NEIGHBOURS:
        raise EvalSetError(f"--query-expansion must be between 0 (off) and {MAX_NEIGHBOURS}")
    encoder = open_encoder(model, threads=settings.ort_threads)
    tiles = settings.tiles if args.tiles is None else args.tiles
    options = EvalOptions(
        tiles=tiles,
        index=args.index,
        partitions=args.partitions,
        depth=args.depth or len(eval_set.corpus),
        dedup_threshold=args.dedup,
        verify_top=settings.verify_top if args.verify is None else args.verify,
        query_expansion=(
            settings.query_expansion if args.query_expansion is None else args.query_expansion
        ),
        query_windows=settings.query_windows if args.query_windows is None else args.query_windows,
        query_turns=settings.query_turns if args.query_turns is None else args.query_turns,
        progress=not args.no_progress,
    )
    result = run_eval(eval_set, encoder, settings, options)
    name = encoder.version if str(model) == "raw-pixels" else Path(model).name
    label = args.label or name + ("" if tiles == "none" else f" +tiles {tiles}")
    if not args.label:
        label += f" +verify {options.verify_top}" if options.verify_top else ""
        label += f" +qe {options.query_expansion}" if options.query_expansion else ""
        label += f" +windows {options.query_windows}" if options.query_windows != "none" else ""
        label += " +turns" if options.query_turns else ""
    path = write_outputs(result, args.out, label, sources)
    summary = {k: round(v, 4) for k, v in result.metrics.items()}
    print(json.dumps({"out": str(path), "label": label, **summary, **result.timings_s}))
    return 0


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.evaluation import classes, clicks, crops, edits, photos

    source = args.source or (classes.FASHION_MNIST if args.kind == "fashion-mnist" else DEMO_CORPUS)
    if args.kind == "crops":
        queries = crops.build_crop_set(source, args.out, args.count, args.seed)
    elif args.kind == "edits":
        queries = edits.build_edit_set(source, args.out, args.count, args.negatives, args.seed)
    elif args.kind == "photos":
        options = photos.PhotoSetOptions(
            split=args.split or "",
            seed=args.seed,
            crops=args.crops,
            per_edit=args.per_edit,
            corpus_size=args.corpus_size,
        )
        summary = photos.build_photo_set(args.out, options, sources_out=args.sources_out)
        print(json.dumps({"set": str(args.out), "kind": args.kind, **summary}))
        return 0
    elif args.kind == "clicks":
        queries = clicks.build_click_set(source, args.out, args.pairs, args.interactions)
    elif args.kind == "classes":
        queries = classes.build_folder_class_set(
            source, args.out, args.level, args.min_class, args.count, args.seed
        )
    else:
        queries = classes.build_fashion_mnist_set(
            args.out, args.per_class, args.split or "t10k", args.count, args.seed, source
        )
    print(json.dumps({"set": str(args.out), "kind": args.kind, "judged_queries": queries}))
    return 0


def cmd_compare(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.evaluation.compare import compare_outputs

    if args.samples < 100:
        raise EvalSetError("--samples must be at least 100")
    comparison = compare_outputs(args.a, args.b, args.metric, args.samples, args.seed)
    print(json.dumps({"a": str(args.a), "b": str(args.b), **comparison.as_json()}))
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from visearch.evaluation.report import write_report

    path = write_report(args.runs, args.out, args.title, args.examples)
    print(f"report written to {path}", file=sys.stderr)
    print(str(path))
    return 0
