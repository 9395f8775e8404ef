"""What ``visearch eval`` writes, and reading it back for the report.

* ``metrics.json`` - the means (trec_eval's measure names, plus ``micro_ap``),
  the curves, the configuration and timings, and where the images are (the
  report draws thumbnails from them);
* ``per_query.tsv`` - one row per judged query, to find the failures;
* ``run.trec`` - the ranked results in TREC run format
  (``query Q0 doc rank score tag``), so trec_eval itself can re-score them.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visearch.evaluation.dataset import EvalSet, EvalSetError, load_eval_set
from visearch.evaluation.runner import EvalResult

METRICS_FILE = "metrics.json"
PER_QUERY_FILE = "per_query.tsv"
RUN_FILE = "run.trec"


def _finite(value: Any) -> Any:
    """NaN is not JSON: an undefined mean is written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def write_outputs(result: EvalResult, out_dir: Path, label: str, sources: dict[str, Path]) -> Path:
    """Write the three files into ``out_dir``; returns the metrics file.

    ``sources`` are the set's ``corpus``, ``queries`` and ``qrels`` paths: the
    report reads images and judgements from them rather than from a copy here.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "label": label,
        "metrics": {k: _finite(round(v, 6)) for k, v in result.metrics.items()},
        "config": result.config,
        "timings_s": result.timings_s,
        "curves": {
            "recall_at_k": [round(v, 6) for v in result.recall_at_k],
            "precision_at_recall": [round(v, 6) for v in result.precision_at_recall],
        },
        "sources": {name: str(Path(path).resolve()) for name, path in sources.items()},
    }
    metrics_path = out_dir / METRICS_FILE
    metrics_path.write_text(json.dumps(document, indent=1) + "\n")
    with (out_dir / PER_QUERY_FILE).open("w", newline="") as handle:
        fields = list(result.per_query[0]) if result.per_query else ["query"]
        writer = csv.DictWriter(handle, fields, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in result.per_query:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    tag = label.replace(" ", "_") or "visearch"
    with (out_dir / RUN_FILE).open("w") as handle:
        for query, hits in result.run.items():
            for rank, (doc, score) in enumerate(hits, 1):
                handle.write(f"{query} Q0 {doc} {rank} {score:.6f} {tag}\n")
    return metrics_path


@dataclass(frozen=True)
class EvalOutput:
    """One evaluation read back: its metrics document and its ranked run."""

    directory: Path
    document: dict[str, Any]
    run: dict[str, list[tuple[str, float]]]

    @property
    def label(self) -> str:
        return str(self.document.get("label") or self.directory.name)


def read_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    """A TREC run file, each query's docs in rank order."""
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    for line in path.read_text().splitlines():
        query, _, doc, rank, score, *_ = line.split()
        ranked.setdefault(query, []).append((int(rank), doc, float(score)))
    return {q: [(doc, score) for _, doc, score in sorted(rows)] for q, rows in ranked.items()}


def read_output(directory: Path) -> EvalOutput:
    """An ``eval --out`` folder; a missing or foreign one is an error naming it."""
    metrics, run = directory / METRICS_FILE, directory / RUN_FILE
    if not metrics.is_file() or not run.is_file():
        raise EvalSetError(f"{directory} holds no evaluation ({METRICS_FILE} and {RUN_FILE})")
    return EvalOutput(directory, json.loads(metrics.read_text()), read_run(run))


def source_set(output: EvalOutput) -> EvalSet:
    """The evaluation set an output was made from, read again from its folders."""
    sources = output.document.get("sources", {})
    try:
        return load_eval_set(
            Path(sources["corpus"]), Path(sources["queries"]), Path(sources["qrels"])
        )
    except KeyError as exc:
        raise EvalSetError(f"{output.directory}: {METRICS_FILE} names no {exc} source") from None
