"""Training the projection head: NT-Xent over augmented views plus the click-pair loss.

Inputs are precomputed backbone features (:mod:`encoders.training_data`), so
one epoch is a few matrix products per batch and the run is dominated by
feature extraction. Every random choice (image order, which two views form a
positive pair, the query view of a click pair) comes from one seeded
``torch.Generator`` whose state is checkpointed with the head and the
optimiser after every epoch: a resumed run continues exactly where the
interrupted one stopped, and two runs with the same seed and data give
identical heads.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from encoders.head import ProjectionHead
from encoders.losses import click_pair_loss, in_batch_negative_mask, nt_xent
from encoders.train_config import TrainConfig
from encoders.training_data import CLEAN_VIEW, PairIndex

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    head: ProjectionHead
    losses: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0


def data_key(features: np.ndarray, pairs: PairIndex | None) -> str:
    """Content hash of the training data: a checkpoint only resumes the same data."""
    digest = hashlib.sha256(np.ascontiguousarray(features).tobytes())
    if pairs is not None:
        for array in (pairs.query, pairs.positive, pairs.negatives, pairs.weights):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class HeadTrainer:
    """One training run of a head over fixed features and pairs, epoch by epoch."""

    def __init__(
        self,
        features: np.ndarray,
        pairs: PairIndex | None,
        config: TrainConfig,
        device: torch.device | None = None,
    ) -> None:
        if len(features) < 2 or features.shape[1] < 2:
            raise ValueError("training needs at least two images with at least one augmented view")
        self.config = config
        self.device = device or torch.device("cpu")
        self.features = torch.from_numpy(features).to(self.device)
        self.pairs = pairs if pairs is not None and len(pairs) and config.pairs_weight > 0 else None
        self.key = data_key(features, self.pairs)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.head = ProjectionHead(config.dim, features.shape[2], seed=config.seed).to(self.device)
        if config.init == "pca":
            self.head.init_pca(self.features.reshape(-1, self.features.shape[2]))
        elif config.init != "random":
            raise ValueError(f"unknown head initialisation {config.init!r}: pca or random")
        self.optimizer = torch.optim.AdamW(
            self.head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.steps_per_epoch = math.ceil(len(features) / min(config.batch_size, len(features)))
        self.epoch = 0
        self.losses: list[dict[str, float]] = []

    def run(self, checkpoints: Path | None = None, progress: bool = True) -> TrainResult:
        """Train the remaining epochs, resuming from ``checkpoints`` when one matches."""
        resumed = self.resume(checkpoints) if checkpoints is not None else 0
        total = self.config.epochs * self.steps_per_epoch
        bar = tqdm(total=total, initial=self.epoch * self.steps_per_epoch, desc="train",
                   unit="step", disable=not progress)  # fmt: skip
        while self.epoch < self.config.epochs:
            self.losses.append(self.train_epoch(bar))
            self.epoch += 1
            bar.set_postfix(loss=f"{self.losses[-1]['loss']:.4f}")
            if checkpoints is not None:
                self.save(checkpoints)
        bar.close()
        return TrainResult(self.head.eval(), self.losses, resumed)

    def train_epoch(self, bar: tqdm | None = None) -> dict[str, float]:
        """One pass over the images (and over the pairs, spread across the same steps)."""
        self.head.train()
        n = len(self.features)
        order = torch.randperm(n, generator=self.generator)
        image_batches = torch.tensor_split(order, self.steps_per_epoch)
        pair_batches: tuple[torch.Tensor, ...] = ()
        if self.pairs is not None:
            pair_order = torch.randperm(len(self.pairs), generator=self.generator)
            pair_batches = torch.tensor_split(pair_order, self.steps_per_epoch)
        sums = {"loss": 0.0, "ssl": 0.0, "pairs": 0.0}
        for step, images in enumerate(image_batches):
            self._set_learning_rate(self.epoch * self.steps_per_epoch + step)
            loss = torch.zeros((), device=self.device)
            if self.config.ssl_weight > 0 and len(images) >= 2:
                ssl = self.ssl_loss(images)
                loss = loss + self.config.ssl_weight * ssl
                sums["ssl"] += ssl.item() / self.steps_per_epoch
            if pair_batches and len(pair_batches[step]):
                clicks = self.pair_loss(pair_batches[step])
                loss = loss + self.config.pairs_weight * clicks
                sums["pairs"] += clicks.item() / self.steps_per_epoch
            if loss.requires_grad:
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
            sums["loss"] += loss.item() / self.steps_per_epoch
            if bar is not None:
                bar.update(1)
        return {"epoch": float(self.epoch + 1), **sums}

    def ssl_loss(self, images: torch.Tensor) -> torch.Tensor:
        """NT-Xent between two distinct random views of each image."""
        views = self.features.shape[1]
        picks = torch.rand(len(images), views, generator=self.generator).argsort(dim=1)[:, :2]
        rows = images.to(self.device)
        chosen = self.features[rows[:, None], picks.to(self.device)]
        embedded = self.head(chosen.reshape(-1, chosen.shape[2])).reshape(len(images), 2, -1)
        return nt_xent(embedded[:, 0], embedded[:, 1], self.config.temperature)

    def pair_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The click-pair loss: query as a random view, candidates as indexed (clean)."""
        assert self.pairs is not None
        index = batch.numpy()
        query_rows = torch.from_numpy(self.pairs.query[index])
        positive_rows = torch.from_numpy(self.pairs.positive[index])
        negative_rows = torch.from_numpy(self.pairs.negatives[index])
        query_views = torch.randint(self.features.shape[1], (len(index),), generator=self.generator)
        query = self.head(self.features[query_rows, query_views].to(self.device))
        # Candidates repeat across pairs (a popular image is a negative of many
        # clicks): embed each distinct image once, then gather.
        mask = negative_rows >= 0
        candidates = torch.cat([positive_rows, negative_rows.clamp(min=0).flatten()])
        distinct, where = torch.unique(candidates, return_inverse=True)
        embedded = self.head(self.features[distinct.to(self.device), CLEAN_VIEW])[where]
        positive = embedded[: len(index)]
        negatives = embedded[len(index) :].reshape(len(index), negative_rows.shape[1], -1)
        weights = torch.from_numpy(self.pairs.weights[index]).to(self.device)
        in_batch = in_batch_negative_mask(query_rows.tolist(), positive_rows.tolist())
        return click_pair_loss(query, positive, negatives, mask.to(self.device), weights, in_batch,
                               self.config.temperature)  # fmt: skip

    def _set_learning_rate(self, step: int) -> None:
        """Cosine decay from the configured rate to zero over the whole run."""
        total = self.config.epochs * self.steps_per_epoch
        rate = self.config.learning_rate * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def save(self, checkpoints: Path) -> Path:
        """Write ``epoch-NNN.pt`` atomically: head, optimiser, generator, losses, config.

        Earlier epochs' files are removed once the new one is in place: each
        holds ~25 MB (head + Adam moments) and only the latest is resumed from.
        """
        checkpoints.mkdir(parents=True, exist_ok=True)
        path = checkpoints / f"epoch-{self.epoch:03d}.pt"
        tmp = path.with_suffix(".pt.tmp")
        state = {
            "epoch": self.epoch,
            "config": self.config.as_dict(),
            "data_key": self.key,
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "losses": self.losses,
        }
        torch.save(state, tmp)
        tmp.replace(path)
        for older in checkpoints.glob("epoch-*.pt"):
            if older != path:
                older.unlink()
        return path

    def resume(self, checkpoints: Path) -> int:
        """Load the latest checkpoint of this config and data; returns its epoch (0: none)."""
        for path in sorted(checkpoints.glob("epoch-*.pt"), reverse=True):
            state = torch.load(path, map_location=self.device, weights_only=True)
            if state["config"] != self.config.as_dict() or state["data_key"] != self.key:
                log.info("not resuming from %s: other config or data", path)
                continue
            self.head.load_state_dict(state["head"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            self.losses = list(state["losses"])
            self.epoch = int(state["epoch"])
            log.info("resuming from %s (epoch %d)", path, self.epoch)
            return self.epoch
        return 0
