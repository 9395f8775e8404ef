"""``visearch eval report``: one self-contained HTML page for one or more evaluations.

Put several runs on the same set side by side (raw pixels, fp32, int8, with
tiles) to see what each step buys. The page holds a table of the means, the
configuration and timings, recall@k and precision-recall charts (inline SVG),
and example queries with their top results as thumbnails (inline JPEG data
URIs, green border = relevant, red = not), so it can be mailed or attached
to an issue as one file. Examples are chosen the same way for every run: the
first queries in id order, half from those whose first result was relevant
and half from those whose was not, so successes and failures both show.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from functools import lru_cache
from html import escape
from pathlib import Path

from PIL import Image

from encoders.preprocess import PreprocessError, decode_image
from visearch.evaluation.curves import RECALL_LEVELS
from visearch.evaluation.dataset import EvalSet
from visearch.evaluation.outputs import EvalOutput, read_output, source_set
from visearch.evaluation.svg import line_chart

THUMBNAIL = 96
TABLE_MEASURES = (
    ("recip_rank", "MRR"),
    ("map", "mAP"),
    ("P_1", "P@1"),
    ("P_5", "P@5"),
    ("recall_1", "R@1"),
    ("recall_5", "R@5"),
    ("recall_10", "R@10"),
    ("recall_100", "R@100"),
    ("ndcg_cut_10", "nDCG@10"),
    ("micro_ap", "µAP"),
)
CONFIG_FIELDS = (
    "model_version",
    "tiles",
    "index",
    "index_kinds",
    "partitions",
    "depth",
    "dedup_threshold",
    "model_dedup_threshold",
    "verify_top",
    "query_expansion",
    "corpus_images",
    "queries",
    "judged_queries",
)
STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.example { display: flex; gap: 6px; align-items: flex-start; margin: 6px 0; }
figure { margin: 0; text-align: center; font-size: 11px; }
figure img { display: block; border: 3px solid transparent; }
.query img { border-color: #555; }
.hit img { border-color: #2ca02c; }
.miss img { border-color: #d62728; }
"""


@lru_cache(maxsize=4096)
def thumbnail_uri(path: Path) -> str:
    """A small JPEG of ``path`` as a data URI (an unreadable file becomes a grey square)."""
    try:
        image = decode_image(path.read_bytes())
    except (OSError, PreprocessError):
        image = Image.new("RGB", (THUMBNAIL, THUMBNAIL), (200, 200, 200))
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _number(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_number(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _charts(outputs: Sequence[EvalOutput]) -> str:
    recall = {}
    for output in outputs:
        ys = output.document["curves"]["recall_at_k"]
        recall[output.label] = (list(range(1, len(ys) + 1)), ys)
    depth = max((len(xs) for xs, _ in recall.values()), default=1)
    pr = {
        output.label: (list(RECALL_LEVELS), output.document["curves"]["precision_at_recall"])
        for output in outputs
    }
    return (
        '<div class="charts">'
        + line_chart(recall, "k (results looked at)", "recall@k", True, (1, max(depth, 10)))
        + line_chart(pr, "recall", "interpolated precision", legend_at_bottom=True)
        + "</div>"
    )


def _pick_examples(output: EvalOutput, eval_set: EvalSet, count: int) -> list[str]:
    """Half queries answered right at rank 1, half wrong, first by id (deterministic)."""
    judged = sorted(eval_set.judged_queries)

    def first_is_relevant(query: str) -> bool:
        hits = output.run.get(query, [])
        return bool(hits) and eval_set.qrels[query].get(hits[0][0], 0) > 0

    right = [q for q in judged if first_is_relevant(q)]
    wrong = [q for q in judged if not first_is_relevant(q)]
    half = count // 2
    chosen = wrong[: count - min(half, len(right))]
    chosen += right[: count - len(chosen)]
    return sorted(chosen)


def _examples(output: EvalOutput, eval_set: EvalSet, count: int, top: int) -> str:
    rows = []
    for query in _pick_examples(output, eval_set, count):
        judged = eval_set.qrels.get(query, {})
        cells = [
            f'<figure class="query"><img src="{thumbnail_uri(eval_set.queries[query])}" '
            f'alt="query {escape(query)}"><figcaption>{escape(query)}</figcaption></figure>'
        ]
        for rank, (doc, score) in enumerate(output.run.get(query, [])[:top], 1):
            kind = "hit" if judged.get(doc, 0) > 0 else "miss"
            cells.append(
                f'<figure class="{kind}"><img src="{thumbnail_uri(eval_set.corpus[doc])}" '
                f'alt="{kind} {escape(doc)}" title="{escape(doc)}">'
                f"<figcaption>#{rank} {score:.3f}</figcaption></figure>"
            )
        rows.append('<div class="example">' + "".join(cells) + "</div>")
    return "".join(rows)


def render_report(
    outputs: Sequence[EvalOutput],
    title: str = "visearch evaluation",
    examples: int = 8,
    top: int = 5,
) -> str:
    """The HTML page for ``outputs`` (evaluations of one set, or of several)."""
    measure_rows = [
        [o.label, *(o.document["metrics"].get(key) for key, _ in TABLE_MEASURES)] for o in outputs
    ]
    config_rows = [
        [o.label, *(o.document["config"].get(key) for key in CONFIG_FIELDS)] for o in outputs
    ]
    timing_keys = sorted({k for o in outputs for k in o.document.get("timings_s", {})})
    timing_rows = [
        [o.label, *(o.document["timings_s"].get(k) for k in timing_keys)] for o in outputs
    ]
    sections = [
        f"<h1>{escape(title)}</h1>",
        "<h2>Measures</h2>",
        _table(["run", *(name for _, name in TABLE_MEASURES)], measure_rows),
        "<p>trec_eval definitions (visearch/evaluation/ir_metrics.py): means over judged queries; "
        "recall divides by every relevant document in the qrels; µAP pools all queries' "
        "(query, result, score) triples, as in copy detection.</p>",
        "<h2>Curves</h2>",
        _charts(outputs),
        "<h2>Configuration</h2>",
        _table(["run", *CONFIG_FIELDS], config_rows),
        "<h2>Time (s)</h2>",
        _table(["run", *timing_keys], timing_rows),
    ]
    for output in outputs:
        eval_set = source_set(output)
        sections += [
            f"<h2>Examples: {escape(output.label)}</h2>",
            f"<p>Query (grey), then the top {top} results; green = relevant, red = not.</p>",
            _examples(output, eval_set, examples, top),
        ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def write_report(
    directories: Sequence[Path], out: Path, title: str = "visearch evaluation", examples: int = 8
) -> Path:
    """Read ``eval --out`` folders and write their report to ``out``."""
    html = render_report([read_output(d) for d in directories], title, examples)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out
