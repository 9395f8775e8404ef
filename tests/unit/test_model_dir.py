"""The model directory refuses incomplete or tampered exports."""

from __future__ import annotations

import dataclasses

import pytest

from encoders.model_dir import (
    ONNX_FILE,
    ModelDirError,
    ModelMetadata,
    content_version,
    is_exported,
    read_metadata,
    write_metadata,
)


def _metadata(version: str) -> ModelMetadata:
    return ModelMetadata(
        name="m", version=version, dim=4, input_size=224, mean=0.5, std=0.5, resize="letterbox"
    )


def test_round_trip_and_content_version(tmp_path):
    (tmp_path / ONNX_FILE).write_bytes(b"onnx bytes")
    version = content_version(tmp_path / ONNX_FILE)
    assert len(version) == 16
    write_metadata(tmp_path, _metadata(version))
    assert read_metadata(tmp_path) == _metadata(version)
    assert is_exported(tmp_path)


def test_missing_files_say_how_to_export(tmp_path):
    with pytest.raises(ModelDirError, match="visearch export"):
        read_metadata(tmp_path)
    assert not is_exported(tmp_path)


def test_a_changed_onnx_file_is_refused(tmp_path):
    (tmp_path / ONNX_FILE).write_bytes(b"onnx bytes")
    write_metadata(tmp_path, _metadata(content_version(tmp_path / ONNX_FILE)))
    (tmp_path / ONNX_FILE).write_bytes(b"other bytes")
    with pytest.raises(ModelDirError, match="re-export"):
        read_metadata(tmp_path)


def test_garbage_metadata_is_refused(tmp_path):
    (tmp_path / ONNX_FILE).write_bytes(b"x")
    (tmp_path / "metadata.json").write_text('{"name": 1}')
    with pytest.raises(ModelDirError, match="not valid metadata"):
        read_metadata(tmp_path)
    fields = {f.name for f in dataclasses.fields(ModelMetadata)}
    assert {"version", "dim", "mean", "std", "resize"} <= fields
