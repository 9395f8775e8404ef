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
    # classes fell apart: held-out mAP 0.42 vs 0.51 at 0.5 (README, Training).
    temperature: float = 0.5
    ssl_weight: float = 1.0
    pairs_weight: float = 1.0
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0
    init: str = "pca"  # or "random": a random orthogonal projection

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
