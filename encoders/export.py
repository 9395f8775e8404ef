"""torch -> ONNX export with a parity check on real images.

The dynamo exporter needs the module in eval mode (in training mode it
silently exports batch-norm statistics updates; measured cosine 0.81), and
``external_data=False`` keeps one self-contained file that the model
directory's content hash covers.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders import preprocess as pp
from encoders.model_dir import ONNX_FILE, ModelMetadata, content_version, write_metadata
from streams.errors import VisearchError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MIN_PARITY_COSINE = 0.9999


class ParityError(VisearchError, RuntimeError):
    """ONNX Runtime output differs from torch beyond the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX Runtime reproduces torch on the same inputs."""

    images: int
    max_abs_diff: float
    min_cosine: float
    same_nearest_neighbour: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "images": self.images,
            "max_abs_diff": self.max_abs_diff,
            "min_cosine": self.min_cosine,
            "same_nearest_neighbour": self.same_nearest_neighbour,
        }


class TrainExtraMissingError(VisearchError, RuntimeError):
    """Exporting or training needs torch and the pretrained weights: the ``train`` extra."""


def export_pretrained(out_dir: Path, parity_images: Sequence[bytes]) -> ModelMetadata:
    """Export the pretrained encoder to ``out_dir`` and verify it on real images.

    Serving needs no torch; this does. Without the ``train`` extra it raises
    :class:`TrainExtraMissingError` naming the directory that lacks a model.
    """
    try:
        from encoders.backbone import BACKBONE_NAME, FEATURE_DIM, load_pretrained
    except ModuleNotFoundError as exc:
        raise TrainExtraMissingError(
            f"{out_dir} holds no exported model, and exporting one needs {exc.name} "
            "(pip install 'visearch[train]'), or point VISEARCH_MODEL_DIR at a model "
            "directory exported elsewhere (`visearch export`)"
        ) from exc

    return export_model(load_pretrained(), out_dir, parity_images, BACKBONE_NAME, FEATURE_DIM)


def export_model(
    model: torch.nn.Module,
    out_dir: Path,
    parity_images: Sequence[bytes],
    name: str,
    dim: int,
    base_version: str = "",
    training: dict[str, Any] | None = None,
    similarity_scale: dict[str, list[float]] | None = None,
) -> ModelMetadata:
    """Export any embedding network (images -> L2-normalised ``dim`` vectors) to ``out_dir``.

    One ONNX graph with a dynamic batch axis, written only after ONNX Runtime
    reproduces torch on ``parity_images`` (real images, the serving
    preprocessing); the metadata's version is the file's content hash.
    """
    import torch

    if len(parity_images) < 2:
        raise ValueError("the parity check needs at least two real images")
    model = model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ONNX_FILE
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_path = Path(tmp) / ONNX_FILE
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            model,
            (torch.zeros(2, 3, pp.INPUT_SIZE, pp.INPUT_SIZE),),
            str(tmp_path),
            dynamo=True,
            external_data=False,
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_shapes={"images": {0: batch}},
            verbose=False,
        )
        inputs = np.stack([pp.preprocess(data) for data in parity_images])
        with torch.no_grad():
            expected = model(torch.from_numpy(inputs)).numpy()
        report = check_parity(tmp_path, inputs, expected)
        tmp_path.replace(onnx_path)
    metadata = ModelMetadata(
        name=name,
        version=content_version(onnx_path),
        dim=dim,
        input_size=pp.INPUT_SIZE,
        mean=pp.MEAN,
        std=pp.STD,
        resize="letterbox",
        parity=report.as_dict(),
        base_version=base_version,
        training=training or {},
        similarity_scale=similarity_scale or {},
    )
    write_metadata(out_dir, metadata)
    log.info("exported %s version %s: %s", metadata.name, metadata.version, report)
    return metadata


def check_parity(onnx_path: Path, inputs: np.ndarray, expected: np.ndarray) -> ParityReport:
    """Run ``onnx_path`` on ``inputs`` and compare with torch's ``expected``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"images": inputs})[0]
    cosines = np.sum(actual * expected, axis=1) / (
        np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    )
    same_nn = int(np.sum(nearest_neighbours(actual) == nearest_neighbours(expected)))
    report = ParityReport(
        images=len(inputs),
        max_abs_diff=float(np.abs(actual - expected).max()),
        min_cosine=float(cosines.min()),
        same_nearest_neighbour=same_nn,
    )
    if report.min_cosine < MIN_PARITY_COSINE or same_nn != len(inputs):
        raise ParityError(f"ONNX output differs from torch: {report}")
    return report


def nearest_neighbours(vectors: np.ndarray) -> np.ndarray:
    """Index of each row's nearest other row by inner product."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argmax(similarity, axis=1)
