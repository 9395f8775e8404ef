"""A whole fine-tuning run: base features -> trained head -> one exported model directory.

The output is a model directory like the pretrained one (``model.onnx`` with
backbone and head as ONE graph and a dynamic batch axis, ``metadata.json``
with version = content hash), so serving, ``visearch eval`` and
``visearch quantize`` use it unchanged. Beside them: ``head.pt`` (the head's
torch weights and config) and ``checkpoints/`` (per-epoch state and the
feature cache, for resuming).

The head is trained on features of the *base ONNX model* but exported on
top of the *torch* backbone, so before anything else the two are compared on
real images: a base directory that is not the pretrained backbone (another
version, int8, a fine-tuned model) would otherwise yield a head trained for
inputs it never sees.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.backbone import BACKBONE_NAME, FEATURE_DIM, EmbeddingNet, load_pretrained
from encoders.export import check_parity, export_model
from encoders.head import FineTunedNet, ProjectionHead
from encoders.model_dir import ONNX_FILE, ModelDirError, read_metadata
from encoders.preprocess import preprocess
from encoders.runtime import OnnxEncoder
from encoders.similarity_scale import calibrate_scale, translate_threshold
from encoders.train import HeadTrainer, resolve_device
from encoders.train_config import TrainConfig
from encoders.training_data import cached_view_features, compute_view_features, index_pairs
from streams.schemas import LabeledPair
from streams.settings import Settings

log = logging.getLogger(__name__)

HEAD_FILE = "head.pt"
CHECKPOINT_DIR = "checkpoints"
FEATURE_CACHE = "features.npz"
PARITY_IMAGES = 16


def check_base(base_dir: Path, backbone: EmbeddingNet, parity_images: Sequence[bytes]) -> str:
    """The base directory must be the fp32 pretrained backbone; returns its version."""
    base = read_metadata(base_dir)
    if base.name != BACKBONE_NAME or base.dim != FEATURE_DIM or base.precision != "fp32":
        raise ModelDirError(
            f"{base_dir} holds {base.name} ({base.dim}-d, {base.precision}); training needs the "
            f"pretrained fp32 {BACKBONE_NAME} (`visearch export`)"
        )
    inputs = np.stack([preprocess(data) for data in parity_images])
    with torch.no_grad():
        expected = backbone(torch.from_numpy(inputs)).numpy()
    check_parity(base_dir / ONNX_FILE, inputs, expected)
    return base.version


def feature_key(images: Mapping[str, Path], base_version: str, config: TrainConfig) -> str:
    """Identity of the view features: base model, images (id, size, mtime), views, seed."""
    digest = hashlib.sha256(f"{base_version}:{config.views_per_image}:{config.seed}".encode())
    for image_id in sorted(images):
        stat = images[image_id].stat()
        digest.update(f"{image_id}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def save_head(path: Path, head: ProjectionHead, config: TrainConfig) -> None:
    """The head's torch checkpoint beside the ONNX file (written atomically)."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"config": config.as_dict(), "state_dict": head.state_dict()}, tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)


def trained_scale(
    base_features: np.ndarray, head: ProjectionHead, seed: int
) -> dict[str, list[float]]:
    """The similarity scale of ``head`` against its base model, on the training images."""
    with torch.no_grad():
        trained = head(torch.from_numpy(np.ascontiguousarray(base_features))).numpy()
    return calibrate_scale(base_features, trained, seed)


def finetune(
    images: Mapping[str, Path],
    pairs: Sequence[LabeledPair],
    base_dir: Path,
    out_dir: Path,
    config: TrainConfig | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Train a head on ``images`` (and click ``pairs``) and export backbone + head.

    Returns what the run did, for the one JSON line ``visearch train`` prints.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    torch_device = resolve_device(device)
    sample = random.Random(config.seed).sample(sorted(images), min(PARITY_IMAGES, len(images)))
    parity_images = [images[image_id].read_bytes() for image_id in sample]
    backbone = load_pretrained()
    base_version = check_base(base_dir, backbone, parity_images)
    encoder = OnnxEncoder(base_dir)
    checkpoints = out_dir / CHECKPOINT_DIR
    views = cached_view_features(
        checkpoints / FEATURE_CACHE,
        feature_key(images, base_version, config),
        lambda: compute_view_features(
            images, encoder, config.views_per_image, config.seed, progress=progress
        ),
    )
    features_s = time.perf_counter() - started
    pair_index = index_pairs(pairs, views.image_ids)
    if pairs and not len(pair_index):
        log.warning("none of the %d pairs names two training images", len(pairs))
    trainer = HeadTrainer(views.features, pair_index, config, torch_device)
    result = trainer.run(checkpoints, progress=progress)
    train_s = time.perf_counter() - started - features_s
    head = result.head.cpu()
    save_head(out_dir / HEAD_FILE, head, config)
    first, last = result.losses[0], result.losses[-1]
    training = {
        **config.as_dict(),
        "images": len(views.image_ids),
        "pairs": len(pair_index),
        "loss_first_epoch": first["loss"],
        "loss_last_epoch": last["loss"],
    }
    scale = trained_scale(views.features[:, 0], head, config.seed)
    metadata = export_model(
        FineTunedNet(backbone, head),
        out_dir,
        parity_images,
        name=f"{BACKBONE_NAME}-head{config.dim}",
        dim=config.dim,
        base_version=base_version,
        training=training,
        similarity_scale=scale,
    )
    return {
        "model_dir": str(out_dir),
        "version": metadata.version,
        "dim": metadata.dim,
        "base_version": base_version,
        "device": str(torch_device),
        "images": len(views.image_ids),
        "skipped_images": len(views.skipped),
        "views_per_image": config.views_per_image,
        "pairs_total": len(pairs),
        "pairs_used": len(pair_index),
        "pairs_unknown": pair_index.unknown_pairs,
        "negatives_unknown": pair_index.unknown_negatives,
        "epochs": config.epochs,
        "resumed_from_epoch": result.resumed_from_epoch,
        "loss_first_epoch": first,
        "loss_last_epoch": last,
        "parity": metadata.parity,
        "dedup_threshold": round(translate_threshold(Settings.dedup_threshold, scale), 4),
        "seconds": {
            "features": round(features_s, 1),
            "training": round(train_s, 1),
            "export": round(time.perf_counter() - started - features_s - train_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },
    }
