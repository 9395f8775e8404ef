"""The training configuration, in a module without torch.

The CLI builds its ``visearch train`` options from these defaults at start-up,
and serving processes must not pay for importing torch (they need only ONNX
Runtime), so this module stays free of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_DIM = 256


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained head (stored in checkpoints and metadata)."""

    dim: int = DEFAULT_DIM
    epochs: int = 30
    views_per_image: int = 8
    batch_size: int = 256
    # 0.1 (SimCLR's) pushed every image away from all others so hard that
    # classes fell apart: held-out mAP 0.42 vs 0.51 at 0.5 (docs/training.md, Measured).
    temperature: float = 0.5
    ssl_weight: float = 1.0
    pairs_weight: float = 1.0
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0
    init: str = "pca"  # or "random": a random orthogonal projection

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def click_recipe(cls) -> TrainConfig:
        """The defaults when click pairs are given: the pairs alone, temperature 0.1,
        batches of 64.

        Measured on held-out images (docs/training.md, Measured): on Tux Paint's 403
        held-out photos nDCG@10 by folder 0.498 -> 0.536 where SSL + pairs at
        0.5 / 256 reached 0.500, and on Fashion-MNIST's t10k 0.743 -> 0.785
        (SSL + pairs 0.748). SSL pulls an image towards its own augmented
        views, which the clicks do not ask for, and at 256 a run over a few
        hundred images takes two optimiser steps per epoch. Without pairs the
        SSL defaults above stay (at 0.1 SSL alone tore classes apart).
        """
        return cls(ssl_weight=0.0, temperature=0.1, batch_size=64)
