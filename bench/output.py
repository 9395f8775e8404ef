"""The benchmark output convention: one JSON object per measurement, per line.

Every line carries ``bench``, ``metric``, ``value``, ``unit``, the ``baseline``
measured in the same run on the same data, and ``ratio`` = value / baseline,
plus any context fields (machine, sizes). Programs in ``bench/`` use this so
their output can be collected and compared without parsing prose.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any, TextIO


def machine() -> str:
    """A short description of where the numbers were measured."""
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{platform.machine()} {os.cpu_count()} cpu, {python}"


def emit(
    bench: str,
    metric: str,
    value: float,
    unit: str,
    baseline: float | None = None,
    stream: TextIO | None = None,
    **context: Any,
) -> dict[str, Any]:
    """Print one measurement as a JSON line and return it."""
    ratio = None if not baseline else value / baseline
    line = {
        "bench": bench,
        "metric": metric,
        "value": round(value, 4) if isinstance(value, float) else value,
        "unit": unit,
        "baseline": round(baseline, 4) if isinstance(baseline, float) else baseline,
        "ratio": None if ratio is None else round(ratio, 4),
        **context,
    }
    print(json.dumps(line), file=stream or sys.stdout, flush=True)
    return line


def bench_parser(doc: str | None, quick: str = "a shorter run") -> argparse.ArgumentParser:
    """The command line every benchmark starts from: its docstring's first paragraph as
    the description, and ``--quick`` (``quick`` says what the short run does)."""
    description = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser
