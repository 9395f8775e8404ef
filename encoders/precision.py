"""Which encoder precision to serve: int8 where it agrees with fp32 on this CPU.

The int8 model (``encoders/quantize.py``) embeds an image in about half the
CPU time of fp32 on these 2-vCPU x86 machines (``bench.embed``: 209 vs 138
images/s with decode), so it is the cheaper default. But int8 results depend
on the CPU's instructions (VNNI or not, AVX-512 or not): a model quantised and
checked on one machine can stray on another. So the check runs where the
model serves, at every start: both models embed the same real photos and the
int8 model is served only when its vectors agree with fp32's (mean cosine
>= ``MIN_MEAN_COSINE``, every image >= ``MIN_COSINE``). Otherwise fp32 is
served and the reason is logged. The check embeds ``CHECK_IMAGES`` photos
with each model: about 0.5 s on 2 vCPU.

Modes (``VISEARCH_MODEL_PRECISION``): ``auto`` (the check decides),
``fp32`` (never int8) and ``int8`` (serve int8 even when the check fails; the
failure is still logged). A model directory that is int8 already is served
as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encoders.model_dir import ONNX_FILE, ModelMetadata, is_exported, read_metadata

MODES = ("auto", "fp32", "int8")
MIN_MEAN_COSINE = 0.98  # the bar `visearch quantize` itself sets (encoders.quantize)
MIN_COSINE = 0.95  # and no single photo far off
CHECK_IMAGES = 16

Compare = Callable[[Path, Path, Sequence[bytes], str], dict[str, Any]]
Quantise = Callable[[Path, Path], ModelMetadata]


@dataclass(frozen=True)
class PrecisionChoice:
    """The model directory to serve, its precision and why."""

    model_dir: Path
    precision: str  # "fp32" or "int8"
    reason: str
    parity: dict[str, Any] = field(default_factory=dict)  # int8 vs fp32 on this CPU


def int8_sibling(fp32_dir: Path) -> Path:
    """Where the int8 copy of ``fp32_dir`` lives (what `visearch quantize` writes)."""
    return fp32_dir.with_name(fp32_dir.name + "-int8")


def agrees(parity: dict[str, Any]) -> bool:
    """Whether int8's vectors are close enough to fp32's to serve in their place."""
    return bool(
        parity.get("mean_cosine", 0.0) >= MIN_MEAN_COSINE
        and parity.get("min_cosine", 0.0) >= MIN_COSINE
    )


def choose_precision(
    fp32_dir: Path,
    mode: str,
    check_images: Sequence[bytes],
    quantise: Quantise,
    compare: Compare,
) -> PrecisionChoice:
    """The model to serve from the exported ``fp32_dir``.

    ``quantise(fp32_dir, out_dir)`` makes the int8 copy when there is none or
    when it was made from another fp32 version (a stale copy is never served);
    ``compare(fp32_onnx, int8_onnx, images, input_name)`` is the parity check.
    """
    if mode not in MODES:
        raise ValueError(f"model precision must be one of {', '.join(MODES)}, not {mode!r}")
    metadata = read_metadata(fp32_dir)
    if metadata.precision == "int8":
        return PrecisionChoice(fp32_dir, "int8", "the configured model is int8")
    if mode == "fp32":
        return PrecisionChoice(fp32_dir, "fp32", "VISEARCH_MODEL_PRECISION=fp32")
    int8_dir = int8_sibling(fp32_dir)
    try:
        if not is_exported(int8_dir) or read_metadata(int8_dir).parity.get("reference") != (
            metadata.version
        ):
            quantise(fp32_dir, int8_dir)
        parity = compare(
            fp32_dir / ONNX_FILE, int8_dir / ONNX_FILE, check_images, metadata.input_name
        )
    except Exception as exc:  # quantisation refused (QuantizationError) or the int8 file broken
        if mode == "int8":
            raise
        return PrecisionChoice(fp32_dir, "fp32", f"no usable int8 model: {exc}")
    summary = f"mean cosine {parity['mean_cosine']:.4f}, min {parity['min_cosine']:.4f}"
    if agrees(parity):
        reason = f"int8 agrees with fp32 on this CPU ({summary})"
        return PrecisionChoice(int8_dir, "int8", reason, parity)
    if mode == "int8":
        reason = f"VISEARCH_MODEL_PRECISION=int8 although it strays ({summary})"
        return PrecisionChoice(int8_dir, "int8", reason, parity)
    reason = f"int8 strays from fp32 on this CPU ({summary})"
    return PrecisionChoice(fp32_dir, "fp32", reason, parity)
