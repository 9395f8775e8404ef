"""Static int8 quantisation with real calibration photos and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.model_dir import read_metadata
from encoders.preprocess import preprocess
from encoders.quantize import fp32_nodes, quantize_int8
from encoders.runtime import OnnxEncoder

pytestmark = pytest.mark.integration


def test_int8_model_stays_close_to_fp32_and_serves(
    model_dir: Path, encoder: OnnxEncoder, photo_paths: list[Path], tmp_path: Path
) -> None:
    images = [path.read_bytes() for path in photo_paths]
    metadata = quantize_int8(model_dir, tmp_path / "int8", images[:32], images[32:60])
    assert metadata.precision == "int8"
    assert metadata.version != encoder.version
    assert metadata.parity["reference"] == encoder.version
    assert metadata.parity["mean_cosine"] >= 0.98
    assert read_metadata(tmp_path / "int8") == metadata

    int8 = OnnxEncoder(tmp_path / "int8", threads=2)
    inputs = np.stack([preprocess(data) for data in images[32:40]])
    fp32_vectors, int8_vectors = encoder.embed(inputs), int8.embed(inputs)
    cosines = np.sum(fp32_vectors * int8_vectors, axis=1) / np.linalg.norm(int8_vectors, axis=1)
    assert cosines.min() > 0.97


def test_the_first_layers_stay_fp32(model_dir: Path) -> None:
    kept = fp32_nodes(model_dir / "model.onnx")
    assert len(kept) == 6  # stem conv + block 0 (2 convs) + block 1 (3 convs)
