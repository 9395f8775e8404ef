"""Crop queries: does a head trained on crop <-> tile pairs beat more tiles?

Denser tiles stop paying after ``VISEARCH_TILES=thirds`` (docs/evaluation.md, crop
queries): the encoder, not the tiling, limits hard-crop recall. This program
measures the next step on held-out images, in one run:

* the Tux Paint stamps are split by image, seeded: half for training, half
  held out;
* every image is indexed as the service does with ``thirds`` (global vector
  + 16 tile vectors, :func:`visearch.evaluation.embedding.embed_images`, the
  int8 ONNX encoder by default);
* training pairs: ``--crops`` hard crops per training image (3-15 % of the
  area, JPEG 70, :func:`visearch.evaluation.crops.hard_crop`) and, as the
  positive of each, the thirds tile that holds most of it;
* a linear map of the embedding (identity-initialised, square) is trained
  with a symmetric InfoNCE loss over in-batch negatives (pairs of the same
  image are not negatives);
* queries: one hard crop of each held-out image, searched against every image
  (max over an image's rows, exact inner product). Baseline: the same rows
  without the map.

    python -m bench.crop_head            # all 802 stamps, 24 crops per image
    python -m bench.crop_head --quick    # 200 stamps, 8 crops per image
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.output import bench_parser, emit, machine
from encoders.preprocess import CropBox, decode_image, preprocess_image
from encoders.runtime import OnnxEncoder
from encoders.tiles import tile_boxes
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.evaluation.crops import crop_queries, duplicate_groups, hard_crop, jpeg_bytes
from visearch.evaluation.embedding import embed_images

BENCH = "crop_head"
TEMPERATURE = 0.05
BATCH = 256


def embed_all(encoder: OnnxEncoder, inputs: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
    return np.concatenate(
        [encoder.embed(np.stack(inputs[k : k + batch])) for k in range(0, len(inputs), batch)]
    )


def covering_tile(box: CropBox, size: tuple[int, int], tiles: Sequence[CropBox]) -> int:
    """Index of the tile that holds the largest part of ``box`` (pixels of an image of ``size``)."""
    left, top, right, bottom = box.to_pixels(*size)

    def overlap(tile: CropBox) -> int:
        t_left, t_top, t_right, t_bottom = tile.to_pixels(*size)
        width = min(right, t_right) - max(left, t_left)
        height = min(bottom, t_bottom) - max(top, t_top)
        return max(0, width) * max(0, height)

    return max(range(len(tiles)), key=lambda j: overlap(tiles[j]))


def training_pairs(
    images: Sequence[Image.Image],
    train: Sequence[int],
    crops: int,
    rng: np.random.Generator,
    tiles: Sequence[CropBox],
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Model inputs of hard crops, and (image, row) of each crop's positive tile row."""
    inputs, positives = [], []
    for index in train:
        image = images[index]
        for _ in range(crops):
            box = hard_crop(image, rng)
            if box is None:
                continue
            crop = image.crop(box.to_pixels(*image.size))
            inputs.append(preprocess_image(decode_image(jpeg_bytes(crop))))
            positives.append((index, 1 + covering_tile(box, image.size, tiles)))
    return inputs, positives


def train_map(
    queries: np.ndarray, targets: np.ndarray, images: np.ndarray, epochs: int
) -> np.ndarray:
    """A square linear map trained so that each crop's nearest row is its tile."""
    torch.manual_seed(0)
    dim = queries.shape[1]
    linear = torch.nn.Linear(dim, dim, bias=False)
    torch.nn.init.eye_(linear.weight)
    optimiser = torch.optim.Adam(linear.parameters(), lr=1e-3, weight_decay=1e-5)
    x, t, owner = torch.tensor(queries), torch.tensor(targets), torch.tensor(images)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), BATCH):
            batch = order[start : start + BATCH]
            zx = torch.nn.functional.normalize(linear(x[batch]), dim=1)
            zt = torch.nn.functional.normalize(linear(t[batch]), dim=1)
            logits = zx @ zt.T / TEMPERATURE
            same_image = owner[batch][:, None] == owner[batch][None, :]
            logits = logits.masked_fill(same_image & ~torch.eye(len(batch), dtype=torch.bool), -1e4)
            labels = torch.arange(len(batch))
            loss = (
                torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)
            ) / 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return linear.weight.detach().numpy().T.astype(np.float32)


def recall_at_1(
    rows: np.ndarray, queries: np.ndarray, relevant: Sequence[set[int]], projection: np.ndarray
) -> float:
    """Share of queries whose best image (max over its rows) is relevant."""
    mapped_rows = rows @ projection
    mapped_rows /= np.linalg.norm(mapped_rows, axis=-1, keepdims=True)
    mapped_queries = queries @ projection
    mapped_queries /= np.linalg.norm(mapped_queries, axis=-1, keepdims=True)
    scores = np.einsum("qd,ird->qir", mapped_queries, mapped_rows).max(axis=2)
    best = scores.argmax(axis=1)
    return float(np.mean([int(b) in rel for b, rel in zip(best, relevant, strict=True)]))


def run(model_dir: Path, count: int | None, crops: int, epochs: int, seed: int) -> None:
    encoder = OnnxEncoder(model_dir)
    paths = find_images(DEMO_CORPUS)[:count]
    images = [decode_image(path.read_bytes()) for path in paths]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    train, held_out = order[: len(order) // 2].tolist(), order[len(order) // 2 :].tolist()
    tiles = tile_boxes("thirds")

    rows = embed_images(paths, encoder, tiles)  # the rows an index of these images holds

    held_out_images = [images[i] for i in held_out]
    queries, relevant = [], []
    groups = duplicate_groups(images)
    for local, data, _ in crop_queries(held_out_images, len(held_out_images), seed + 1):
        if data is not None:
            queries.append(preprocess_image(decode_image(data)))
            relevant.append(set(groups[held_out[local]]))
    query_vectors = embed_all(encoder, queries)

    inputs, positives = training_pairs(images, train, crops, rng, tiles)
    crop_vectors = embed_all(encoder, inputs)
    targets = np.stack([rows[image, row] for image, row in positives])
    owners = np.array([image for image, _ in positives])
    projection = train_map(crop_vectors, targets, owners, epochs)

    identity = np.eye(rows.shape[2], dtype=np.float32)
    baseline = recall_at_1(rows, query_vectors, relevant, identity)
    trained = recall_at_1(rows, query_vectors, relevant, projection)
    emit(
        BENCH,
        "held_out_crop_recall_at_1",
        trained,
        "recall",
        baseline,
        baseline_name="same thirds rows, no trained map",
        images=len(images),
        train_images=len(train),
        held_out_queries=len(queries),
        training_pairs=len(positives),
        epochs=epochs,
        model_version=encoder.version,
        machine=machine(),
    )


def main() -> None:
    parser = bench_parser(__doc__, "200 stamps, 8 crops per image")
    parser.add_argument("--model", type=Path, help="model directory (default: int8 if present)")
    parser.add_argument("--crops", type=int, default=24, help="training crops per image")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    settings = Settings.from_env()
    model = args.model or settings.resolved_model_dir
    int8 = model.with_name(model.name + "-int8")
    if args.model is None and int8.is_dir():
        model = int8
    count = 200 if args.quick else None
    crops = 8 if args.quick else args.crops
    run(model, count, crops, args.epochs, args.seed)


if __name__ == "__main__":
    main()
