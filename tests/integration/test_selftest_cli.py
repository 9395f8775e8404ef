"""`visearch selftest --json`: the acceptance check, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_selftest_json_passes(model_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISEARCH_")}
    env["VISEARCH_MODEL_DIR"] = str(model_dir)
    env["VISEARCH_DATA_DIR"] = str(tmp_path)
    completed = subprocess.run(
        [sys.executable, "-m", "visearch", "selftest", "--json", "--count", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["images"] == 20
    assert report["searchable"] == 20
    assert report["rank1"] >= 0.9 * report["images"]
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["ok"] is True
