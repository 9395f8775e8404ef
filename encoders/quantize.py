"""Static int8 quantisation of an exported encoder, calibrated on real images.

Recipe (measured on 2-vCPU x86 machines without VNNI): QDQ format, per-channel int8 weights,
uint8 activations, MinMax calibration, with the stem convolution and blocks
0-1 kept in fp32. Those first layers see raw pixels and small feature maps
where quantisation error is largest; quantising them too cost most of the
accuracy in earlier measurements (cosine 0.84 to fp32), while keeping them
costs little speed. Dynamic quantisation is not offered: on CPUs without
VNNI it was both slower and wrong (cosine 0.67-0.84).

The int8 model is a model directory of its own with its own version (content
hash) and a parity report against the fp32 model it came from. int8 results
depend on the CPU's instructions, so `visearch run` checks it against fp32 on
the serving machine at every start before serving it (encoders/precision.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from encoders.export import ParityReport, nearest_neighbours
from encoders.model_dir import (
    ONNX_FILE,
    ModelMetadata,
    content_version,
    read_metadata,
    write_metadata,
)
from encoders.preprocess import preprocess
from streams.errors import VisearchError

KEEP_FP32_PREFIXES = ("backbone._conv_stem", "backbone._blocks.0.", "backbone._blocks.1.")
MIN_MEAN_COSINE = 0.98
CALIBRATION_BATCH = 16


class QuantizationError(VisearchError, RuntimeError):
    """The int8 model strays too far from fp32 to serve."""


def fp32_nodes(model_path: Path) -> list[str]:
    """Names of the Conv nodes that stay fp32 (the stem and blocks 0-1)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    return [
        node.name
        for node in graph.node
        if node.op_type == "Conv" and any(i.startswith(KEEP_FP32_PREFIXES) for i in node.input)
    ]


def quantize_int8(
    fp32_dir: Path, out_dir: Path, calibration: Sequence[bytes], evaluation: Sequence[bytes]
) -> ModelMetadata:
    """Quantise ``fp32_dir`` into ``out_dir``; compare both on ``evaluation`` images."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) < CALIBRATION_BATCH or len(evaluation) < 2:
        raise ValueError("need at least 16 calibration and 2 evaluation images")
    source = read_metadata(fp32_dir)
    batches = np.stack([preprocess(data) for data in calibration])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = (
                {source.input_name: batches[i : i + CALIBRATION_BATCH]}
                for i in range(0, len(batches), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference trips over the dynamo export's Expand nodes;
        # ONNX's own shape inference is enough for quantisation.
        quant_pre_process(str(fp32_dir / ONNX_FILE), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / ONNX_FILE
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=fp32_nodes(prepared),
            calibrate_method=CalibrationMethod.MinMax,
        )
        report = compare(fp32_dir / ONNX_FILE, quantized, evaluation, source.input_name)
        if report["mean_cosine"] < MIN_MEAN_COSINE:
            raise QuantizationError(f"int8 strays from fp32: {report}")
        quantized.replace(out_dir / ONNX_FILE)
    metadata = replace(
        source,
        version=content_version(out_dir / ONNX_FILE),
        precision="int8",
        parity={**report, "reference": source.version},
    )
    write_metadata(out_dir, metadata)
    return metadata


def compare(
    fp32_path: Path, int8_path: Path, images: Sequence[bytes], input_name: str
) -> dict[str, float | int]:
    """Cosine of int8 to fp32 embeddings per image, and nearest-neighbour agreement."""
    import onnxruntime as ort

    inputs = np.stack([preprocess(data) for data in images])
    outputs = []
    for path in (fp32_path, int8_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        vectors = session.run(None, {input_name: inputs})[0]
        outputs.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    reference, quantized = outputs
    cosines = np.sum(reference * quantized, axis=1)
    parity = ParityReport(
        images=len(inputs),
        max_abs_diff=float(np.abs(reference - quantized).max()),
        min_cosine=float(cosines.min()),
        same_nearest_neighbour=int(
            np.sum(nearest_neighbours(reference) == nearest_neighbours(quantized))
        ),
    )
    return {**parity.as_dict(), "mean_cosine": float(cosines.mean())}
