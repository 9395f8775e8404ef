"""Shared fixtures: real photos, the exported pretrained model, fresh registries."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from encoders.runtime import OnnxEncoder
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.models.serving import ensure_exported

REPO_ROOT = Path(__file__).resolve().parent.parent
# The same directory `make run` uses, so the model is exported once per checkout.
MODEL_DIR = REPO_ROOT / "data" / "models" / "efficientnet-lite0"


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    """Real photos (Debian tuxpaint-stamps-default, installed by `make test`)."""
    if not DEMO_CORPUS.is_dir():
        pytest.fail(f"{DEMO_CORPUS} is missing: run `make test` (it installs the photos)")
    paths = find_images(DEMO_CORPUS)
    return random.Random(1234).sample(paths, 60)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    ensure_exported(MODEL_DIR, DEMO_CORPUS)
    return MODEL_DIR


@pytest.fixture(scope="session")
def encoder(model_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(model_dir, threads=2)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()
