"""The projection head trained on top of the frozen backbone, and backbone + head as one net.

The head maps the backbone's pooled, L2-normalised 1280-d embedding to ``D``
dimensions (default 256): Linear -> ReLU -> Linear -> L2 normalisation. It
starts as an orthogonal projection: the first layer is the identity (exact
through the ReLU, because EfficientNet-Lite's features come out of a ReLU6
and are never negative), the second has orthonormal rows — random ones, or
(what training uses, :meth:`ProjectionHead.init_pca`) the training features'
top principal directions. Training thus starts from about the pretrained
retrieval quality instead of from noise.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from encoders.backbone import FEATURE_DIM, EmbeddingNet
from encoders.train_config import DEFAULT_DIM


class ProjectionHead(nn.Module):
    """``(n, in_dim)`` backbone embeddings -> ``(n, dim)`` L2-normalised embeddings."""

    def __init__(self, dim: int = DEFAULT_DIM, in_dim: int = FEATURE_DIM, seed: int = 0) -> None:
        super().__init__()
        if not 1 <= dim <= in_dim:
            raise ValueError(f"head dimension must be in 1..{in_dim}, got {dim}")
        self.dim = dim
        self.hidden = nn.Linear(in_dim, in_dim)
        self.out = nn.Linear(in_dim, dim)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.eye(in_dim))
            self.hidden.bias.zero_()
            # QR of a Gaussian matrix: orthonormal columns, uniformly random.
            q, r = torch.linalg.qr(torch.randn(in_dim, dim, generator=generator))
            self.out.weight.copy_((q * torch.sign(torch.diagonal(r))).T)
            self.out.bias.zero_()

    def init_pca(self, features: torch.Tensor) -> None:
        """Start as the projection onto the top ``dim`` principal directions of ``features``.

        Still an orthogonal projection, but onto the directions in which the
        training images vary most instead of random ones. Measured on the Tux
        Paint held-out split (docs/training.md, Measured): a random projection to 256-d
        costs 4.4 points of mAP before any training (0.482 -> 0.438), the
        PCA projection gains 0.6 (0.487), and training from it ends higher.
        """
        with torch.no_grad():
            mean = features.mean(dim=0)
            centred = features - mean
            _, vectors = torch.linalg.eigh(centred.T @ centred / len(features))
            top = vectors[:, -self.dim :].flip(dims=(1,)).T
            # eigh's signs are arbitrary: fix each direction's sign for reproducibility
            top = top * torch.sign(top.sum(dim=1, keepdim=True) + 1e-12)
            self.out.weight.copy_(top)
            self.out.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = self.out(functional.relu(self.hidden(features)))
        return functional.normalize(projected, dim=1)


class FineTunedNet(EmbeddingNet):
    """Images -> backbone embedding -> head: exported as one ONNX graph, one call to serve.

    A subclass rather than a wrapper so that the backbone's weights keep the
    pretrained model's names (``backbone._conv_stem...``): ``visearch
    quantize`` picks the layers it keeps in fp32 by those names, and a
    wrapper's ``backbone.backbone.`` prefix made it quantise them all
    (measured: mean cosine to fp32 0.993, 56/64 same neighbour).
    """

    def __init__(self, pretrained: EmbeddingNet, head: ProjectionHead) -> None:
        super().__init__(pretrained.backbone)
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(super().forward(images))
