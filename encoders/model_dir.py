"""The model directory: ONNX file + metadata that serving needs to trust it.

Layout::

    <model_dir>/model.onnx      the exported embedding network (dynamic batch)
    <model_dir>/metadata.json   name, version, dim, preprocessing, parity report
    <model_dir>/head.pt         (trained models) the projection head's torch weights

``version`` is a content hash of ``model.onnx``: two directories with the same
version embed identically, and every ImageEmbedded record names the version
that produced it, so vectors of different models are never mixed in one index.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import VisearchError

ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


class ModelDirError(VisearchError, RuntimeError):
    """The model directory is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelMetadata:
    """What a server must know about an exported encoder."""

    name: str
    version: str
    dim: int
    input_size: int
    mean: float
    std: float
    resize: str
    precision: str = "fp32"
    input_name: str = "images"
    output_name: str = "embeddings"
    parity: dict[str, Any] = field(default_factory=dict)
    # A fine-tuned encoder names the model its training features came from and
    # how it was trained, so a run can be traced and repeated from its output.
    base_version: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    # A trained model's similarities next to its base model's (matched
    # quantiles, encoders/similarity_scale.py): thresholds set on the base
    # model's scale, like the near-duplicate collapse, are translated with it.
    similarity_scale: dict[str, list[float]] = field(default_factory=dict)


def content_version(onnx_path: Path) -> str:
    """First 16 hex digits of the SHA-256 of the ONNX file."""
    digest = hashlib.sha256()
    with onnx_path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def write_metadata(model_dir: Path, metadata: ModelMetadata) -> None:
    """Write ``metadata.json`` atomically (temp file, fsync, rename)."""
    target = model_dir / METADATA_FILE
    tmp = target.with_suffix(".json.tmp")
    with tmp.open("w") as handle:
        json.dump(asdict(metadata), handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(target)


def read_metadata(model_dir: Path) -> ModelMetadata:
    """Load and check the metadata; the ONNX file must match its version."""
    meta_path = model_dir / METADATA_FILE
    onnx_path = model_dir / ONNX_FILE
    if not meta_path.is_file() or not onnx_path.is_file():
        raise ModelDirError(
            f"{model_dir} has no exported model: run `visearch export --out {model_dir}`"
        )
    try:
        metadata = ModelMetadata(**json.loads(meta_path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelDirError(f"{meta_path} is not valid metadata: {exc}") from exc
    actual = content_version(onnx_path)
    if actual != metadata.version:
        raise ModelDirError(
            f"{onnx_path} has version {actual} but metadata says {metadata.version}: "
            "re-export the model"
        )
    return metadata


def is_exported(model_dir: Path) -> bool:
    """True when the directory holds a consistent exported model."""
    try:
        read_metadata(model_dir)
    except ModelDirError:
        return False
    return True
