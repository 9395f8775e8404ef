"""``visearch eval compare A B``: is B better than A on the same queries, beyond noise?

Two evaluations of one set (two models, two settings) differ per query; the
mean difference alone says nothing about whether another sample of queries
would agree. The paired bootstrap (Efron & Tibshirani; Sakai, "Evaluating
evaluation metrics based on the bootstrap", SIGIR 2006) resamples queries
with replacement and recomputes the mean of the per-query differences: the
2.5th and 97.5th percentiles of those means are a 95 % confidence interval,
and the share of resamples at or below zero a one-sided p-value. Pairing
matters: queries vary far more among themselves than the models do on one
query, and comparing the two means unpaired would bury a real difference
in that spread.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visearch.evaluation.dataset import EvalSetError
from visearch.evaluation.outputs import PER_QUERY_FILE


@dataclass(frozen=True)
class Comparison:
    metric: str
    queries: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_b_not_better: float  # share of resampled mean differences <= 0
    samples: int

    def as_json(self) -> dict[str, float | int | str]:
        return {key: round(v, 6) if isinstance(v, float) else v for key, v in vars(self).items()}


def per_query_metric(directory: Path, metric: str) -> dict[str, float]:
    """One metric of every query of an ``eval --out`` folder."""
    path = directory / PER_QUERY_FILE
    if not path.is_file():
        raise EvalSetError(f"{directory} holds no {PER_QUERY_FILE}: not an eval --out folder")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if rows and metric not in rows[0]:
        columns = ", ".join(k for k in rows[0] if k != "query")
        raise EvalSetError(f"{path} has no column {metric!r} (it has {columns})")
    return {row["query"]: float(row[metric]) for row in rows}


def paired_bootstrap(
    a: dict[str, float], b: dict[str, float], metric: str, samples: int = 10_000, seed: int = 0
) -> Comparison:
    """B - A over the queries both evaluated, with a paired bootstrap interval."""
    queries = sorted(set(a) & set(b))
    if not queries:
        raise EvalSetError("the two evaluations share no query")
    values_a = np.array([a[q] for q in queries])
    values_b = np.array([b[q] for q in queries])
    differences = values_b - values_a
    rows = np.random.default_rng(seed).integers(0, len(queries), (samples, len(queries)))
    means = differences[rows].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Comparison(
        metric=metric,
        queries=len(queries),
        mean_a=float(values_a.mean()),
        mean_b=float(values_b.mean()),
        difference=float(differences.mean()),
        ci_low=float(low),
        ci_high=float(high),
        p_b_not_better=float((means <= 0).mean()),
        samples=samples,
    )


def compare_outputs(
    a: Path, b: Path, metric: str = "ndcg_10", samples: int = 10_000, seed: int = 0
) -> Comparison:
    """Paired comparison of two ``eval --out`` folders on ``metric`` (a per-query column)."""
    return paired_bootstrap(
        per_query_metric(a, metric), per_query_metric(b, metric), metric, samples, seed
    )
