"""Augmentations (seeded, small crops, serving preprocessing) and the head's initialisation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from encoders.augment import AugmentConfig, augment, random_resized_crop, view_rng
from encoders.head import ProjectionHead
from encoders.preprocess import INPUT_SIZE, preprocess_image


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(180, 240, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_a_view_depends_only_on_seed_image_and_view_number(image: Image.Image) -> None:
    first = preprocess_image(augment(image, view_rng(3, "img-1", 2)))
    again = preprocess_image(augment(image, view_rng(3, "img-1", 2)))
    other = preprocess_image(augment(image, view_rng(3, "img-1", 3)))
    assert first.shape == (3, INPUT_SIZE, INPUT_SIZE) and np.isfinite(first).all()
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_crops_cover_small_to_whole_areas(image: Image.Image) -> None:
    rng = random.Random(0)
    areas = [
        np.prod(random_resized_crop(image, rng).size) / np.prod(image.size) for _ in range(300)
    ]
    assert min(areas) >= 0.07 and max(areas) <= 1.0
    assert sum(a < 0.15 for a in areas) >= 10  # small crops do happen
    assert max(areas) > 0.8


def test_every_operation_changes_the_image(image: Image.Image) -> None:
    everything = AugmentConfig(
        min_crop_area=1.0, p_flip=0, p_jitter=1, p_grayscale=1, p_blur=1, p_overlay=1, p_jpeg=1
    )
    view = augment(image, random.Random(1), everything)
    pixels = np.asarray(view, dtype=np.int16)
    assert view.size == image.size
    assert np.abs(pixels - np.asarray(image, dtype=np.int16)).mean() > 10
    grey = augment(image, random.Random(1), AugmentConfig(min_crop_area=1.0, p_grayscale=1,
                   p_flip=0, p_jitter=0, p_blur=0, p_overlay=0, p_jpeg=0))  # fmt: skip
    channels = np.asarray(grey, dtype=np.int16)
    assert np.ptp(channels - channels[..., :1]) == 0  # R = G = B


def test_random_init_is_an_orthogonal_projection() -> None:
    head = ProjectionHead(dim=64, in_dim=128, seed=1)
    rows = head.out.weight.detach()
    assert torch.allclose(rows @ rows.T, torch.eye(64), atol=1e-5)
    features = torch.rand(5, 128)  # non-negative, as the backbone's are
    expected = torch.nn.functional.normalize(features @ rows.T, dim=1)
    assert torch.allclose(head(features), expected, atol=1e-6)


def test_pca_init_projects_onto_the_top_principal_directions() -> None:
    generator = torch.Generator().manual_seed(0)
    scales = torch.linspace(3.0, 0.1, 32)
    features = (torch.randn(500, 32, generator=generator) * scales).abs()
    first, second = ProjectionHead(8, 32), ProjectionHead(8, 32, seed=5)
    first.init_pca(features)
    second.init_pca(features)
    rows = first.out.weight.detach()
    assert torch.allclose(rows @ rows.T, torch.eye(8), atol=1e-5)
    assert torch.equal(rows, second.out.weight.detach())  # data, not seed, decides
    centred = features - features.mean(dim=0)
    covariance = centred.T @ centred / len(features)
    best = torch.linalg.eigvalsh(covariance)[-8:].sum()  # the most variance 8 directions keep
    assert float(torch.trace(rows @ covariance @ rows.T)) == pytest.approx(float(best), rel=1e-4)
