"""The encoder under evaluation, and embedding image files in batches.

Images go through the service's own steps: :func:`encoders.preprocess.decode_image`
with the configured limits, then :func:`encoders.tiles.image_inputs` (global
input, then tiles, in index row order) and an ``embed`` call on a batch. The
encoder is an exported model directory run by ONNX Runtime
(:class:`encoders.runtime.OnnxEncoder`, what the service serves), or
``raw-pixels``: the letterboxed input itself, average-pooled to a small grid,
as the floor any learned embedding has to beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from encoders.model_dir import ModelDirError
from encoders.preprocess import CropBox, ImageLimits, PreprocessError, decode_image
from encoders.runtime import OnnxEncoder
from encoders.tiles import image_inputs
from visearch.evaluation.dataset import EvalSetError

RAW_PIXELS = "raw-pixels"


class Encoder(Protocol):
    """What evaluation needs of an encoder (``OnnxEncoder`` has it)."""

    @property
    def version(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, inputs: np.ndarray) -> np.ndarray: ...


class RawPixelEncoder:
    """Model inputs average-pooled to ``grid x grid`` RGB, centred, L2-normalised.

    Pooling keeps the layout and colours and drops the detail no pixel
    comparison survives (a shift of a few pixels); centring each vector makes the
    cosine a correlation, so an overall brightness change costs little.
    """

    def __init__(self, grid: int = 16) -> None:
        self.grid = grid

    @property
    def version(self) -> str:
        return f"{RAW_PIXELS}-{self.grid}x{self.grid}"

    @property
    def dim(self) -> int:
        return 3 * self.grid * self.grid

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        n, channels, height, width = inputs.shape
        cell_h, cell_w = height // self.grid, width // self.grid
        cropped = inputs[:, :, : cell_h * self.grid, : cell_w * self.grid]
        pooled = cropped.reshape(n, channels, self.grid, cell_h, self.grid, cell_w)
        vectors = pooled.mean(axis=(3, 5)).reshape(n, -1)
        vectors -= vectors.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def open_encoder(model: str | Path, threads: int = 0) -> Encoder:
    """``raw-pixels`` or an exported model directory."""
    if str(model) == RAW_PIXELS:
        return RawPixelEncoder()
    try:
        return OnnxEncoder(Path(model), threads=threads)
    except ModelDirError as exc:
        raise EvalSetError(f"{exc} (or use --model {RAW_PIXELS})") from exc


def embed_images(
    paths: Sequence[Path],
    encoder: Encoder,
    tiles: Sequence[CropBox] = (),
    limits: ImageLimits | None = None,
    batch_size: int = 32,
    progress: tqdm | None = None,
) -> np.ndarray:
    """``(len(paths), 1 + len(tiles), dim)`` vectors: global first, then tiles.

    An image that does not decode is an error naming the file: an evaluation
    that silently dropped it would score a different set.
    """
    limits = limits or ImageLimits()
    per_image = 1 + len(tiles)
    out = np.empty((len(paths), per_image, encoder.dim), dtype=np.float32)
    images_per_batch = max(1, batch_size // per_image)
    for start in range(0, len(paths), images_per_batch):
        batch = paths[start : start + images_per_batch]
        inputs: list[np.ndarray] = []
        for path in batch:
            try:
                inputs.extend(image_inputs(decode_image(path.read_bytes(), limits), tiles))
            except PreprocessError as exc:
                raise EvalSetError(f"{path}: {exc}") from exc
        vectors = encoder.embed(np.stack(inputs))
        out[start : start + len(batch)] = vectors.reshape(len(batch), per_image, -1)
        if progress is not None:
            progress.update(len(batch))
    return out
