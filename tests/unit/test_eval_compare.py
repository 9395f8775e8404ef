"""Paired bootstrap comparison of two evaluations."""

from pathlib import Path

import pytest

from visearch.cli.main import main
from visearch.evaluation.compare import compare_outputs, paired_bootstrap
from visearch.evaluation.dataset import EvalSetError


def _write(directory: Path, values: dict[str, float]) -> Path:
    directory.mkdir()
    lines = ["query\tap\tndcg_10"] + [f"{q}\t0.5\t{v}" for q, v in values.items()]
    (directory / "per_query.tsv").write_text("\n".join(lines) + "\n")
    return directory


def test_a_consistent_gain_is_significant_and_a_coin_flip_is_not() -> None:
    a = {f"q{i}": 0.5 + 0.01 * (i % 7) for i in range(200)}
    better = {q: v + 0.02 + 0.01 * ((i % 3) - 1) for i, (q, v) in enumerate(a.items())}
    result = paired_bootstrap(a, better, "ndcg_10")
    assert result.difference == pytest.approx(0.02, abs=1e-3)
    assert 0 < result.ci_low < result.difference < result.ci_high
    assert result.p_b_not_better < 0.001
    # +-0.05 alternating: a mean difference of 0 whose interval straddles it
    noisy = {q: v + (0.05 if i % 2 else -0.05) for i, (q, v) in enumerate(a.items())}
    flat = paired_bootstrap(a, noisy, "ndcg_10")
    assert flat.ci_low < 0 < flat.ci_high
    assert 0.2 < flat.p_b_not_better < 0.8


def test_only_shared_queries_are_paired(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", {"q1": 0.2, "q2": 0.4, "only-a": 0.0})
    b = _write(tmp_path / "b", {"q1": 0.3, "q2": 0.6, "only-b": 1.0})
    result = compare_outputs(a, b, samples=500)
    assert result.queries == 2
    assert result.difference == pytest.approx(0.15)
    assert (result.mean_a, result.mean_b) == (pytest.approx(0.3), pytest.approx(0.45))


def test_bad_inputs_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a", {"q1": 0.2})
    with pytest.raises(EvalSetError, match="no column 'recall_7'"):
        compare_outputs(a, a, "recall_7")
    with pytest.raises(EvalSetError, match="not an eval --out folder"):
        compare_outputs(a, tmp_path / "missing")
    other = _write(tmp_path / "other", {"q9": 0.1})
    with pytest.raises(EvalSetError, match="share no query"):
        compare_outputs(a, other)
    assert main(["eval", "compare", str(a), str(a), "--samples", "5"]) == 1
    assert "at least 100" in capsys.readouterr().err
