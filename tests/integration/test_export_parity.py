"""The exported ONNX model reproduces torch on real photos (issue 4 acceptance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.backbone import load_pretrained
from encoders.export import check_parity
from encoders.model_dir import ONNX_FILE, read_metadata
from encoders.preprocess import preprocess

pytestmark = pytest.mark.integration


def test_onnx_matches_torch_on_fifty_real_photos(model_dir: Path, photo_paths: list[Path]) -> None:
    inputs = np.stack([preprocess(path.read_bytes()) for path in photo_paths[:50]])
    with torch.no_grad():
        expected = load_pretrained()(torch.from_numpy(inputs)).numpy()
    report = check_parity(model_dir / ONNX_FILE, inputs, expected)
    assert report.images == 50
    assert report.min_cosine >= 0.9999
    assert report.same_nearest_neighbour == 50
    assert report.max_abs_diff < 1e-3


def test_model_directory_records_its_parity_and_version(model_dir: Path) -> None:
    metadata = read_metadata(model_dir)
    assert metadata.parity["min_cosine"] >= 0.9999
    assert metadata.resize == "letterbox" and metadata.dim == 1280
    assert len(metadata.version) == 16
