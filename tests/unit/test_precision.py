"""Choosing the served encoder precision: the decision logic, with stand-in quantise and
compare steps (the real ones run in tests/integration/test_serving_precision.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from encoders.model_dir import (
    ONNX_FILE,
    ModelMetadata,
    content_version,
    read_metadata,
    write_metadata,
)
from encoders.precision import choose_precision, int8_sibling


def _model(directory: Path, content: str, precision: str = "fp32", reference: str = "") -> Path:
    """A model directory whose ONNX file is ``content`` (the version is its hash)."""
    directory.mkdir(parents=True)
    (directory / ONNX_FILE).write_bytes(b"onnx " + content.encode())
    parity = {"reference": reference} if reference else {}
    version = content_version(directory / ONNX_FILE)
    metadata = ModelMetadata(
        name="m", version=version, dim=4, input_size=224, mean=0.5, std=0.5,
        resize="letterbox", precision=precision, parity=parity,
    )  # fmt: skip
    write_metadata(directory, metadata)
    return directory


class Steps:
    """Records what the chooser asked for; answers with the given parity."""

    def __init__(self, parity: dict[str, Any] | Exception) -> None:
        self.parity = parity
        self.quantised: list[tuple[Path, Path]] = []
        self.compared: list[tuple[Path, Path, int]] = []

    def quantise(self, fp32_dir: Path, out_dir: Path) -> ModelMetadata:
        self.quantised.append((fp32_dir, out_dir))
        if out_dir.exists():
            (out_dir / ONNX_FILE).unlink()
            (out_dir / "metadata.json").unlink()
            out_dir.rmdir()
        _model(out_dir, "int8-new", "int8", reference=read_metadata(fp32_dir).version)
        return read_metadata(out_dir)

    def compare(
        self, fp32: Path, int8: Path, images: Sequence[bytes], input_name: str
    ) -> dict[str, Any]:
        self.compared.append((fp32, int8, len(images)))
        if isinstance(self.parity, Exception):
            raise self.parity
        return self.parity


GOOD = {"mean_cosine": 0.997, "min_cosine": 0.99}
STRAYS = {"mean_cosine": 0.93, "min_cosine": 0.80}
ONE_FAR_OFF = {"mean_cosine": 0.99, "min_cosine": 0.90}


def test_auto_serves_int8_when_it_agrees_and_makes_it_once(tmp_path: Path) -> None:
    fp32 = _model(tmp_path / "enc", "v1")
    steps = Steps(GOOD)
    choice = choose_precision(fp32, "auto", [b"a", b"b"], steps.quantise, steps.compare)
    assert (choice.model_dir, choice.precision) == (int8_sibling(fp32), "int8")
    assert "agrees" in choice.reason and choice.parity == GOOD
    assert steps.quantised == [(fp32, tmp_path / "enc-int8")]
    assert steps.compared == [(fp32 / ONNX_FILE, tmp_path / "enc-int8" / ONNX_FILE, 2)]
    again = choose_precision(fp32, "auto", [b"a", b"b"], steps.quantise, steps.compare)
    assert again.precision == "int8" and len(steps.quantised) == 1  # reused, checked again
    assert len(steps.compared) == 2


@pytest.mark.parametrize("parity", [STRAYS, ONE_FAR_OFF])
def test_auto_falls_back_to_fp32_when_int8_strays_on_this_cpu(
    tmp_path: Path, parity: dict[str, Any]
) -> None:
    fp32 = _model(tmp_path / "enc", "v1")
    steps = Steps(parity)
    choice = choose_precision(fp32, "auto", [b"a"], steps.quantise, steps.compare)
    assert (choice.model_dir, choice.precision) == (fp32, "fp32")
    assert "strays" in choice.reason and choice.parity == parity
    forced = choose_precision(fp32, "int8", [b"a"], steps.quantise, steps.compare)
    assert (forced.model_dir, forced.precision) == (int8_sibling(fp32), "int8")
    assert "although it strays" in forced.reason


def test_a_stale_int8_copy_of_another_fp32_version_is_made_again(tmp_path: Path) -> None:
    fp32 = _model(tmp_path / "enc", "v2")
    _model(tmp_path / "enc-int8", "int8-old", "int8", reference="v1")
    steps = Steps(GOOD)
    choice = choose_precision(fp32, "auto", [b"a"], steps.quantise, steps.compare)
    assert steps.quantised == [(fp32, tmp_path / "enc-int8")]
    assert choice.precision == "int8"
    assert read_metadata(choice.model_dir).parity["reference"] == read_metadata(fp32).version


def test_fp32_mode_and_int8_models_skip_the_check(tmp_path: Path) -> None:
    fp32 = _model(tmp_path / "enc", "v1")
    steps = Steps(GOOD)
    choice = choose_precision(fp32, "fp32", [b"a"], steps.quantise, steps.compare)
    assert (choice.model_dir, choice.precision) == (fp32, "fp32")
    int8 = _model(tmp_path / "given-int8", "q1", "int8", reference="v0")
    given = choose_precision(int8, "auto", [b"a"], steps.quantise, steps.compare)
    assert (given.model_dir, given.precision) == (int8, "int8")
    assert steps.quantised == [] and steps.compared == []


def test_a_failed_quantisation_serves_fp32_unless_int8_is_demanded(tmp_path: Path) -> None:
    fp32 = _model(tmp_path / "enc", "v1")
    steps = Steps(RuntimeError("int8 strays from fp32: cosine 0.7"))
    choice = choose_precision(fp32, "auto", [b"a"], steps.quantise, steps.compare)
    assert choice.precision == "fp32" and "no usable int8 model" in choice.reason
    with pytest.raises(RuntimeError, match=r"cosine 0\.7"):
        choose_precision(fp32, "int8", [b"a"], steps.quantise, steps.compare)
    with pytest.raises(ValueError, match="auto, fp32, int8"):
        choose_precision(fp32, "fast", [b"a"], steps.quantise, steps.compare)
