"""`visearch run` serves the int8 encoder where it agrees with fp32 on this CPU, and says so:
a real subprocess, real quantisation of a private copy of the model, real ONNX Runtime."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from bench.support import running_stack
from encoders.model_dir import read_metadata
from encoders.precision import MIN_MEAN_COSINE, int8_sibling
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _gauge(metrics: str, name: str, labels: str) -> float:
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name}{{{labels}}} missing from /metrics"
    return float(match.group(1))


def test_visearch_run_makes_checks_and_serves_the_int8_model(
    model_dir: Path, photo_paths: list[Path], tmp_path: Path
) -> None:
    fp32 = tmp_path / "models" / "encoder"
    shutil.copytree(model_dir, fp32)  # its own copy: no int8 sibling yet
    base = Settings().with_overrides(model_dir=str(fp32), ort_threads=1)
    (tmp_path / "run").mkdir()
    with running_stack(base, tmp_path / "run", "precision") as stack:
        int8 = read_metadata(int8_sibling(fp32))
        assert int8.precision == "int8"
        assert int8.parity["reference"] == read_metadata(fp32).version

        metrics = stack.http.get("/metrics").text
        assert _gauge(metrics, "visearch_encoder_precision", 'precision="int8"') == 1.0
        assert _gauge(metrics, "visearch_encoder_precision", 'precision="fp32"') == 0.0
        assert _gauge(metrics, "visearch_encoder_int8_parity_cosine", 'stat="mean"') >= (
            MIN_MEAN_COSINE
        )
        assert re.search(r"serving \S+-int8 \(int8\): int8 agrees with fp32", stack.log.read_text())

        # Worker and API embed with it: an uploaded photo is found by its own bytes.
        photo = photo_paths[0].read_bytes()
        stack.http.post(
            "/v1/images", files={"image": ("p.png", photo, "image/png")}, data={"image_id": "p-1"}
        ).raise_for_status()
        deadline = time.monotonic() + 60
        while True:
            answer = stack.http.post(
                "/v1/search", files={"image": ("q.png", photo, "image/png")}
            ).json()
            if answer["results"] and answer["results"][0]["image_id"] == "p-1":
                break
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
        assert answer["model_version"] == int8.version
