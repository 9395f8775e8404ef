"""One exception hierarchy: every error class visearch defines derives from VisearchError,
and coded failures share one shape."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from encoders.preprocess import PreprocessError
from streams.errors import CodedError, VisearchError
from streams.image_source import ImageSourceError
from streams.remote_fetch import FetchError
from streams.schemas import SchemaError
from visearch.models.rollout import RolloutError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "encoders", "index", "feedback", "visearch")


def _error_classes() -> dict[str, tuple[str, list[str]]]:
    """Every ``class *Error`` in the core packages: name -> (file, base names)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                    bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                    found[node.name] = (str(path.relative_to(ROOT)), bases)
    return found


def test_every_error_class_derives_from_visearch_error() -> None:
    classes = _error_classes()
    assert len(classes) >= 30
    ours = set(classes) | {"VisearchError"}
    strays = {n: c for n, c in classes.items() if n != "VisearchError" and not set(c[1]) & ours}
    assert not strays, f"derive these from streams.errors.VisearchError: {strays}"


@pytest.mark.parametrize(
    "kind", [SchemaError, ImageSourceError, FetchError, PreprocessError, RolloutError]
)
def test_coded_errors_share_one_shape(kind: type[CodedError]) -> None:
    error = kind("some_code", "what went wrong")
    assert isinstance(error, VisearchError) and isinstance(error, CodedError)
    assert (error.code, error.message, str(error)) == (
        "some_code", "what went wrong", "some_code: what went wrong",
    )  # fmt: skip
