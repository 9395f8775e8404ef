"""The click loop end to end: do clicks from a running system make a better model?

``python -m bench.click_loop [--source DIR] [--train-sessions N] [--eval-sessions N]
[--seed S] [--out DIR] [--quick]``

1. Split the photos of every folder in half (:mod:`bench.heldout_split`).
2. Serve the training half with the pretrained model (broker, worker, index,
   API and feedback aggregator, as ``visearch run``); simulated users
   (``visearch simulate-traffic``, clicking same-folder results) search it;
   the labelled pairs are exported (``visearch pairs export``).
3. ``visearch train --pairs`` (its defaults: the click recipe).
4. Serve the held-out half, which training never saw, once per model, to
   the same simulated sessions (same seed); export both interactions logs.
5. Pool the two logs into click-derived judgements — graded by the click
   model and by session counts (``visearch eval build clicks``) — and
   evaluate both models on them and on the folder ground truth the users
   click by, through the service's search path (``visearch eval``).

The baseline is the pretrained model, measured in the same run on the same
sessions. JSON lines (``bench.output``): per judgement set,
``metric`` ``ndcg_10_<set>`` with the trained model's value, the pretrained
one as ``baseline``, the paired difference and its bootstrap 95 % interval
(``visearch eval compare``); and the online CTR of each model's sessions.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.heldout_split import split
from bench.output import bench_parser, emit, machine
from encoders.finetune import finetune
from encoders.train_config import TrainConfig
from feedback.simulate import ApiClient, Relevance, folder_relevance, simulate
from feedback.trainer_feed import INTERACTIONS, PAIRS, export_log, load_pairs
from streams.settings import Settings
from visearch.api.from_stack import stack_api
from visearch.api.serving import serve_in_thread
from visearch.catalog.corpus import DEMO_CORPUS, image_folders
from visearch.evaluation.classes import build_folder_class_set
from visearch.evaluation.clicks import build_click_set
from visearch.evaluation.compare import compare_outputs
from visearch.evaluation.dataset import load_set_dir, set_dir_sources
from visearch.evaluation.embedding import open_encoder
from visearch.evaluation.outputs import write_outputs
from visearch.evaluation.runner import EvalOptions, run_eval
from visearch.local.ingest import ingest_folder
from visearch.local.stack import LocalStack, isolated_settings
from visearch.models.serving import ensure_exported
from visearch.models.training import images_in_folder

BENCH = "click_loop"
# Event time between a session's last event and the one that closes it; a
# simulated session spans at most k + 1 seconds of event time.
SESSION_GAP_S = 12.0
CLOSING_SESSIONS = 40


@dataclass(frozen=True)
class Served:
    """What one model's sessions produced."""

    report: dict[str, Any]
    pairs: Path
    interactions: Path


def serve_and_simulate(
    settings: Settings,
    corpus: Path,
    model: Path,
    sessions: int,
    seed: int,
    relevant: Relevance,
    out: Path,
) -> Served:
    """Run the whole system on ``corpus`` with ``model``, simulate ``sessions``, export
    the pairs and the interactions they made into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="visearch-click-loop-") as tmp:
        private = isolated_settings(settings, Path(tmp), "click-loop").with_overrides(
            model_dir=str(model.resolve()), feedback_session_gap_s=SESSION_GAP_S
        )
        with LocalStack(private) as stack:
            assert stack.publisher is not None and stack.feedback is not None
            ingest_folder(private, stack.store, stack.publisher, corpus, "demo", progress=False)
            missing = stack.wait_searchable(list(images_in_folder(corpus)), 600)
            if missing:
                raise RuntimeError(f"{len(missing)} images never became searchable")
            with serve_in_thread(stack_api(stack)) as url:
                report = simulate(ApiClient(url), sessions, seed=seed, relevant=relevant)
                # Sessions close on their partition's event time: later sessions on
                # every interactions partition close the real ones (40 miss one of 4
                # partitions with probability 4 * 0.75**40, about 4e-5).
                time.sleep(SESSION_GAP_S + 1)
                simulate(ApiClient(url), CLOSING_SESSIONS, seed=seed + 1, relevant=relevant)
            _wait_for_pairs(stack)
            stack.feedback.consumer.save_checkpoint()  # publishes the pending pairs
            pairs, interactions = out / "pairs.jsonl", out / "interactions.jsonl"
            export_log(private, PAIRS, pairs, idle_s=2.0)
            export_log(private, INTERACTIONS, interactions, idle_s=2.0)
    return Served(report.as_json(), pairs, interactions)


def _wait_for_pairs(stack: LocalStack, settle_s: float = 2.0, timeout_s: float = 120.0) -> None:
    """Until the aggregator's pair count has not moved for ``settle_s``."""
    assert stack.feedback is not None
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        emitted = stack.feedback.summary()["pairs_emitted"]
        if emitted != last:
            last, since = emitted, time.monotonic()
        elif time.monotonic() - since >= settle_s:
            return
        time.sleep(0.2)


def evaluate(settings: Settings, set_dir: Path, model: Path, out: Path) -> Path:
    """``visearch eval --set set_dir --model model --out out`` (the service's search path)."""
    eval_set = load_set_dir(set_dir)
    encoder = open_encoder(model, threads=settings.ort_threads)
    result = run_eval(eval_set, encoder, settings, EvalOptions(progress=False))
    write_outputs(result, out, model.name, set_dir_sources(set_dir))
    return out


def run(
    settings: Settings,
    source: Path,
    work: Path,
    train_sessions: int,
    eval_sessions: int,
    seed: int,
) -> None:
    pretrained = settings.resolved_model_dir
    ensure_exported(pretrained, source)
    relevant = folder_relevance(image_folders(source))
    counts = split(source, work / "split", 0.5, seed)
    train_dir, heldout_dir = work / "split" / "train", work / "split" / "heldout"

    started = time.monotonic()
    clicks = serve_and_simulate(
        settings, train_dir, pretrained, train_sessions, seed, relevant, work / "train-sessions"
    )
    pairs = load_pairs(clicks.pairs)
    trained = work / "model"
    summary = finetune(
        images_in_folder(train_dir),
        pairs,
        pretrained,
        trained,
        TrainConfig.click_recipe(),
        progress=False,
    )
    served = {
        name: serve_and_simulate(
            settings, heldout_dir, model, eval_sessions, seed + 100, relevant, work / name
        )
        for name, model in (("pretrained", pretrained), ("trained", trained))
    }
    pooled = work / "pooled"
    pooled.mkdir(exist_ok=True)
    for kind in ("pairs", "interactions"):
        with (pooled / f"{kind}.jsonl").open("w") as handle:
            for result in served.values():
                handle.write(getattr(result, kind).read_text())
    sets = {
        "click_model": lambda out: build_click_set(
            heldout_dir, out, interactions_file=pooled / "interactions.jsonl"
        ),
        "session_counts": lambda out: build_click_set(
            heldout_dir, out, pairs_file=pooled / "pairs.jsonl"
        ),
        # every folder level (9 is deeper than any): the folders the users click by
        "folder_truth": lambda out: build_folder_class_set(heldout_dir, out, level=9, min_class=2),
    }
    context = {
        "machine": machine(),
        "source": str(source),
        "train_images": counts["train"],
        "heldout_images": counts["heldout"],
        "train_sessions": train_sessions,
        "pairs": len(pairs),
        "eval_sessions_per_model": eval_sessions,
        "trained_version": summary["version"],
    }
    for name, build in sets.items():
        set_dir = work / "sets" / name
        queries = build(set_dir)
        outputs = {
            model_name: evaluate(settings, set_dir, model, work / "eval" / f"{name}-{model_name}")
            for model_name, model in (("pretrained", pretrained), ("trained", trained))
        }
        comparison = compare_outputs(outputs["pretrained"], outputs["trained"], seed=seed)
        emit(BENCH, f"ndcg_10_{name}", comparison.mean_b, "nDCG@10", comparison.mean_a,
             difference=round(comparison.difference, 4), ci95=[round(comparison.ci_low, 4),
             round(comparison.ci_high, 4)], queries=queries, **context)  # fmt: skip
    emit(BENCH, "ctr", served["trained"].report["ctr"], "clicks/impression",
         served["pretrained"].report["ctr"],
         relevant_impression_share=[served[m].report["relevant_impression_share"]
                                    for m in ("pretrained", "trained")],
         minutes=round((time.monotonic() - started) / 60, 1), **context)  # fmt: skip


def main() -> None:
    parser = bench_parser(__doc__, "2,000 + 3,000 sessions")
    parser.add_argument("--source", type=Path, default=DEMO_CORPUS, help="folders of photos")
    parser.add_argument("--train-sessions", type=int, default=10_000)
    parser.add_argument("--eval-sessions", type=int, default=11_000, help="per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the work here (default: a temp dir)")
    args = parser.parse_args()
    if args.quick:
        args.train_sessions, args.eval_sessions = 2_000, 3_000
    settings = Settings.from_env()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        run(settings, args.source, args.out, args.train_sessions, args.eval_sessions, args.seed)
        return
    with tempfile.TemporaryDirectory(prefix="visearch-click-loop-") as tmp:
        run(settings, args.source, Path(tmp), args.train_sessions, args.eval_sessions, args.seed)


if __name__ == "__main__":
    main()
