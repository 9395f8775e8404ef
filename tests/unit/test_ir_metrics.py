"""Offline IR metrics: the brief's worked example, pytrec_eval parity, micro-AP."""

import math

import numpy as np
import pytest
import pytrec_eval

from visearch.evaluation.ir_metrics import (
    average_precision,
    dcg,
    evaluate,
    micro_average_precision,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
)

KS = (1, 3, 5, 10, 20)
TOL = 1e-9
SEEDS = range(30)


# --- the product brief's worked example ---------------------------------------------------


def test_brief_worked_example():
    grades = [0, 5, 1, 4, 2]
    assert round(float(dcg(grades)), 3) == 6.151
    # The brief prints 8.9543; the exact value is 8.954396, so 8.9543 is truncated.
    assert float(dcg(sorted(grades, reverse=True))) == pytest.approx(8.9543, abs=1e-4)
    qrels = {"q": {f"d{i}": g for i, g in enumerate(grades, 1)}}
    run = {"q": [f"d{i}" for i in range(1, 6)]}
    assert round(ndcg_at_k(run, qrels, 5).per_query["q"], 4) == 0.6869
    assert round(ndcg_at_k(run, qrels).mean, 4) == 0.6869


def test_gain_is_linear_not_exponential():
    # With 2**rel - 1 the grade-2 doc would weigh 3, not 2.
    qrels = {"q": {"a": 2, "b": 1}}
    run = {"q": ["b", "a"]}
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(run, qrels, 2).mean == pytest.approx(expected, abs=TOL)


# --- parity with pytrec_eval (trec_eval 9) ------------------------------------------------


def _fixture(seed):
    """Random graded qrels and a distinct-score run covering the awkward cases."""
    rng = np.random.default_rng(seed)
    pool = [f"doc{i:03d}" for i in range(40)]
    qrels, run = {}, {}
    for q in range(int(rng.integers(3, 9))):
        qid = f"q{q}"
        judged = rng.choice(pool, size=int(rng.integers(1, 15)), replace=False)
        grades = rng.integers(0, 6, size=len(judged))
        if rng.random() < 0.15:
            grades[:] = 0  # a query with no relevant doc at all
        qrels[qid] = {str(d): int(g) for d, g in zip(judged, grades, strict=True)}
        depth = 0 if rng.random() < 0.1 else int(rng.integers(1, 25))
        ranked = [str(d) for d in rng.choice(pool, size=depth, replace=False)]
        run[qid] = ranked
    run["unjudged"] = list(pool[:5])  # in the run only: skipped by both
    qrels["unasked"] = {pool[0]: 3}  # in the qrels only: skipped by both
    return run, qrels


def _as_scores(ranked):
    """Strictly decreasing scores in rank order, no ties."""
    return {doc: float(len(ranked) - i) + 0.5 / (i + 1) for i, doc in enumerate(ranked)}


def _pytrec(run, qrels):
    measures = {"recip_rank", "map", "ndcg"} | {
        f"{m}.{','.join(map(str, KS))}" for m in ("P", "recall", "ndcg_cut")
    }
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures)
    return evaluator.evaluate({q: _as_scores(r) for q, r in run.items()})


def _ours(run, qrels):
    ours = {
        "recip_rank": reciprocal_rank(run, qrels),
        "map": average_precision(run, qrels),
        "ndcg": ndcg_at_k(run, qrels),
    }
    for k in KS:
        ours[f"P_{k}"] = precision_at_k(run, qrels, k)
        ours[f"recall_{k}"] = recall_at_k(run, qrels, k)
        ours[f"ndcg_cut_{k}"] = ndcg_at_k(run, qrels, k)
    return ours


@pytest.mark.parametrize("seed", SEEDS)
def test_matches_pytrec_eval_per_query(seed):
    run, qrels = _fixture(seed)
    reference = _pytrec(run, qrels)
    ours = _ours(run, qrels)
    for name, scores in ours.items():
        assert set(scores.per_query) == set(reference), name
        for qid, value in scores.per_query.items():
            assert abs(value - reference[qid][name]) <= TOL, (seed, name, qid)


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluate_means_match_pytrec_eval(seed):
    run, qrels = _fixture(seed)
    reference = _pytrec(run, qrels)
    means = evaluate(run, qrels, ks=KS)
    assert means["num_q"] == len(reference)
    for name, value in means.items():
        if name == "num_q":
            continue
        expected = float(np.mean([per_query[name] for per_query in reference.values()]))
        assert abs(value - expected) <= TOL, (seed, name)


def test_fixtures_cover_the_awkward_cases():
    missed_relevant = no_relevant_retrieved = empty = 0
    for seed in SEEDS:
        run, qrels = _fixture(seed)
        for qid, ranked in run.items():
            if qid not in qrels:
                continue
            relevant = {d for d, g in qrels[qid].items() if g > 0}
            missed_relevant += bool(relevant - set(ranked))
            no_relevant_retrieved += not (relevant & set(ranked))
            empty += not ranked
    assert missed_relevant > 20
    assert no_relevant_retrieved > 10
    assert empty > 0


def test_score_ties_break_like_trec_eval():
    # trec_eval orders equal scores by doc id descending; a scores mapping follows it.
    qrels = {"q": {"a": 3, "b": 0, "c": 1, "d": 2}}
    run = {"q": {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.9, "e": 0.1}}
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"map", "ndcg_cut.2,3"}).evaluate(run)
    assert average_precision(run, qrels).mean == pytest.approx(reference["q"]["map"], abs=TOL)
    for k in (2, 3):
        ours = ndcg_at_k(run, qrels, k).mean
        assert ours == pytest.approx(reference["q"][f"ndcg_cut_{k}"], abs=TOL)


def test_sequence_and_scores_runs_agree():
    run, qrels = _fixture(0)
    as_scores = {q: _as_scores(r) for q, r in run.items()}
    assert evaluate(run, qrels, ks=KS) == evaluate(as_scores, qrels, ks=KS)


# --- edge cases ---------------------------------------------------------------------------


def test_empty_ranking_scores_zero_and_counts_in_the_mean():
    qrels = {"hit": {"a": 1}, "empty": {"a": 1}}
    run = {"hit": ["a"], "empty": []}
    means = evaluate(run, qrels, ks=(1,))
    assert means["num_q"] == 2
    assert means["recip_rank"] == means["map"] == means["P_1"] == 0.5
    assert reciprocal_rank(run, qrels).per_query["empty"] == 0.0


def test_all_rankings_empty():
    means = evaluate({"q": []}, {"q": {"a": 2}}, ks=(5,))
    assert means == {
        "num_q": 1.0,
        "recip_rank": 0.0,
        "map": 0.0,
        "ndcg": 0.0,
        "P_5": 0.0,
        "recall_5": 0.0,
        "ndcg_cut_5": 0.0,
    }


def test_query_without_relevant_docs_scores_zero():
    qrels = {"q": {"a": 0, "b": 0}}
    run = {"q": ["a", "b"]}
    means = evaluate(run, qrels, ks=(1, 2))
    assert means["num_q"] == 1
    assert all(v == 0.0 for name, v in means.items() if name != "num_q")


def test_queries_missing_from_qrels_or_run_are_skipped():
    qrels = {"judged": {"a": 1}, "unasked": {"a": 1}}
    run = {"judged": ["a"], "unjudged": ["a"]}
    scores = reciprocal_rank(run, qrels)
    assert scores.per_query == {"judged": 1.0}
    assert scores.mean == 1.0


def test_no_evaluated_query_gives_nan():
    assert math.isnan(average_precision({"q": ["a"]}, {"other": {"a": 1}}).mean)
    assert math.isnan(evaluate({}, {})["ndcg_cut_5"])


def test_cutoff_beyond_the_ranking():
    qrels = {"q": {"a": 1, "b": 1, "z": 1}}
    run = {"q": ["a", "x", "b"]}
    assert precision_at_k(run, qrels, 10).mean == pytest.approx(0.2)
    assert recall_at_k(run, qrels, 10).mean == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("run", "qrels"),
    [
        ({"q": ["a", "a"]}, {"q": {"a": 1}}),
        ({"q": ["a"]}, {"q": {"a": -1}}),
        ({"q": {"a": float("nan")}}, {"q": {"a": 1}}),
    ],
)
def test_malformed_input_is_rejected(run, qrels):
    with pytest.raises(ValueError):
        evaluate(run, qrels)


def test_bad_cutoff_and_string_ranking_are_rejected():
    with pytest.raises(ValueError):
        precision_at_k({"q": ["a"]}, {"q": {"a": 1}}, 0)
    with pytest.raises(TypeError):
        evaluate({"q": "abc"}, {"q": {"a": 1}})


# --- micro-AP (DISC21 / ISC copy detection) -----------------------------------------------


def test_micro_ap_hand_computed():
    predictions = [
        ("q1", "a", 0.9),  # match     precision 1/1
        ("q2", "b", 0.8),  # non-match
        ("q1", "c", 0.7),  # match     precision 2/3
        ("q3", "d", 0.6),  # non-match
        ("q2", "e", 0.5),  # match     precision 3/5
    ]
    truth = [("q1", "a"), ("q1", "c"), ("q2", "e"), ("q3", "f")]  # (q3, f) never predicted
    expected = (1 + 2 / 3 + 3 / 5) / 4
    assert micro_average_precision(predictions, truth) == pytest.approx(expected, abs=TOL)
    as_mapping = {"q1": {"a": 0.9, "c": 0.7}, "q2": {"b": 0.8, "e": 0.5}, "q3": {"d": 0.6}}
    assert micro_average_precision(as_mapping, truth) == pytest.approx(expected, abs=TOL)


def test_micro_ap_perfect_and_all_wrong():
    truth = [("q1", "a"), ("q2", "b")]
    perfect = [("q1", "a", 0.9), ("q2", "b", 0.8), ("q1", "x", 0.2), ("q2", "y", 0.1)]
    assert micro_average_precision(perfect, truth) == 1.0
    wrong = [("q1", "x", 0.9), ("q2", "y", 0.8)]
    assert micro_average_precision(wrong, truth) == 0.0
    assert micro_average_precision([], truth) == 0.0
    assert math.isnan(micro_average_precision(perfect, []))


def test_micro_ap_ties_are_scored_worst_case():
    truth = [("q", "a")]
    tied = [("q", "a", 0.5), ("q", "b", 0.5), ("q", "c", 0.5)]
    assert micro_average_precision(tied, truth) == pytest.approx(1 / 3)


def test_micro_ap_pools_across_queries():
    # Each query ranks its copy first (per-query AP 1), but q2's copy scores below
    # q1's non-copy, so one global threshold cannot separate them: micro-AP < 1.
    predictions = [("q1", "a", 0.9), ("q1", "x", 0.6), ("q2", "b", 0.5), ("q2", "y", 0.1)]
    truth = [("q1", "a"), ("q2", "b")]
    assert micro_average_precision(predictions, truth) == pytest.approx((1 + 2 / 3) / 2)
    run = {"q1": {"a": 0.9, "x": 0.6}, "q2": {"b": 0.5, "y": 0.1}}
    assert average_precision(run, {"q1": {"a": 1}, "q2": {"b": 1}}).mean == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_micro_ap_matches_isc_recall_step_formula(seed):
    # ISC's reference: sum over the PR curve of (recall step) x precision.
    rng = np.random.default_rng(seed)
    n = 200
    pairs = [(f"q{int(rng.integers(20))}", f"r{i}") for i in range(n)]
    scores = rng.integers(0, 30, size=n) / 30  # many ties on purpose
    labels = rng.random(n) < 0.3
    truth = [p for p, y in zip(pairs, labels, strict=True) if y] + [("q0", "never")]
    order = sorted(range(n), key=lambda i: (scores[i], not labels[i]), reverse=True)
    y = labels[order]
    precision = np.cumsum(y) / np.arange(1, n + 1)
    recall = np.cumsum(y) / len(truth)
    expected = float(((recall - np.concatenate([[0], recall[:-1]])) * precision).sum())
    predictions = [(q, r, float(s)) for (q, r), s in zip(pairs, scores, strict=True)]
    assert micro_average_precision(predictions, truth) == pytest.approx(expected, abs=TOL)


def test_micro_ap_rejects_duplicate_pairs():
    with pytest.raises(ValueError):
        micro_average_precision([("q", "a", 0.5), ("q", "a", 0.4)], [("q", "a")])
