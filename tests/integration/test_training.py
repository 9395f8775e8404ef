"""``visearch train`` on real photos: features, loss, seeding, resume, export, pairs.

Tiny on purpose (16 photos, 2 augmented views, 1-3 epochs): what is checked
is behaviour, not quality; docs/training.md has the measured gains.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.finetune import HEAD_FILE
from encoders.head import ProjectionHead
from encoders.model_dir import ONNX_FILE, read_metadata
from encoders.preprocess import preprocess
from encoders.quantize import fp32_nodes
from encoders.runtime import OnnxEncoder
from encoders.similarity_scale import translate_threshold
from encoders.train import HeadTrainer
from encoders.train_config import TrainConfig
from encoders.training_data import ViewFeatures, compute_view_features, index_pairs
from streams.schemas import LabeledPair, encode
from visearch.catalog.corpus import DEMO_CORPUS, image_id_for
from visearch.cli.main import main

pytestmark = pytest.mark.integration

SMALL = TrainConfig(dim=64, epochs=3, views_per_image=2, batch_size=8, seed=3)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a busy shared 2-core box two spin-waiting threads ran 6x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos(photo_paths: list[Path]) -> dict[str, Path]:
    """16 real photos by the ids ``visearch ingest`` would give them."""
    return {image_id_for(p, DEMO_CORPUS): p for p in photo_paths[:16]}


@pytest.fixture(scope="module")
def views(photos: dict[str, Path], encoder: OnnxEncoder) -> ViewFeatures:
    return compute_view_features(photos, encoder, SMALL.views_per_image, SMALL.seed, progress=False)


def click(query: str, positive: str, negatives: list[str], number: int) -> LabeledPair:
    return LabeledPair(
        pair_id=f"s{number}:1", search_id=f"s{number}", query_image_id=query,
        positive_image_id=positive, position=1, weight=1.5, model_version="m",
        created_at=1.0, negative_image_ids=negatives,
    )  # fmt: skip


def test_views_are_seeded_and_include_the_clean_image(
    views: ViewFeatures, photos: dict[str, Path], encoder: OnnxEncoder
) -> None:
    assert views.features.shape == (16, 3, 1280) and not views.skipped
    again = compute_view_features(photos, encoder, 2, SMALL.seed, progress=False)
    np.testing.assert_array_equal(views.features, again.features)
    first = views.image_ids[0]
    clean = encoder.embed(preprocess(photos[first].read_bytes())[None])[0]
    np.testing.assert_allclose(views.features[0, 0], clean, atol=1e-5)
    assert float(views.features[0, 1] @ views.features[0, 2]) < 0.999  # views differ


def test_loss_decreases_and_seeded_runs_give_identical_heads(views: ViewFeatures) -> None:
    ids = views.image_ids
    pairs = index_pairs([click(ids[i], ids[i + 1], [ids[i + 2]], i) for i in range(10)], ids)
    config = TrainConfig(**{**SMALL.as_dict(), "epochs": 8})
    first = HeadTrainer(views.features, pairs, config).run(progress=False)
    second = HeadTrainer(views.features, pairs, config).run(progress=False)
    losses = [epoch["loss"] for epoch in first.losses]
    assert losses[-1] < losses[0] and first.losses[-1]["pairs"] > 0
    for name, tensor in first.head.state_dict().items():
        assert torch.equal(tensor, second.head.state_dict()[name]), name


def test_an_interrupted_run_resumes_to_the_same_head(views: ViewFeatures, tmp_path: Path) -> None:
    uninterrupted = HeadTrainer(views.features, None, SMALL).run(progress=False)
    interrupted = HeadTrainer(views.features, None, SMALL)
    interrupted.losses.append(interrupted.train_epoch())
    interrupted.epoch += 1
    interrupted.save(tmp_path)
    resumed = HeadTrainer(views.features, None, SMALL).run(tmp_path, progress=False)
    assert resumed.resumed_from_epoch == 1
    assert [p.name for p in tmp_path.glob("epoch-*.pt")] == ["epoch-003.pt"]
    for name, tensor in uninterrupted.head.state_dict().items():
        assert torch.equal(tensor, resumed.head.state_dict()[name]), name
    other = TrainConfig(**{**SMALL.as_dict(), "temperature": 0.2})
    assert HeadTrainer(views.features, None, other).resume(tmp_path) == 0  # other config


def test_train_command_exports_one_servable_graph_and_reports_unknown_pairs(
    photos: dict[str, Path],
    photo_paths: list[Path],
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "images"
    for path in photos.values():
        target = folder / path.relative_to(DEMO_CORPUS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    ids = sorted(photos)
    pairs = [click(ids[0], ids[1], [ids[2], "deleted-image"], 1), click("gone", ids[3], [], 2)]
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(encode(p).decode() + "\n" for p in pairs))
    out = tmp_path / "model"
    args = ["train", "--images", str(folder), "--pairs", str(pairs_file), "--base",
            str(model_dir), "--out", str(out), "--dim", "64", "--epochs", "1",
            "--views-per-image", "2", "--batch-size", "8", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is the summary and nothing else
    assert (summary["images"], summary["dim"], summary["device"]) == (16, 64, "cpu")
    assert (summary["pairs_used"], summary["pairs_unknown"], summary["negatives_unknown"]) == (
        1, 1, 1,
    )  # fmt: skip
    assert summary["parity"]["min_cosine"] >= 0.9999

    metadata = read_metadata(out)
    assert metadata.version == summary["version"] and metadata.dim == 64
    assert metadata.base_version == read_metadata(model_dir).version
    assert metadata.training["pairs"] == 1 and metadata.training["dim"] == 64
    # with pairs, the click recipe's defaults; the batch size given wins
    recipe = {k: metadata.training[k] for k in ("ssl_weight", "temperature", "batch_size")}
    assert recipe == {"ssl_weight": 0.0, "temperature": 0.1, "batch_size": 8}
    # int8 keeps the same first layers in fp32 as for the pretrained model (found by name)
    assert len(fp32_nodes(out / ONNX_FILE)) == len(fp32_nodes(model_dir / ONNX_FILE)) > 0
    encoder = OnnxEncoder(out, threads=1)
    unseen = [p for p in photo_paths if p not in photos.values()][:8]
    inputs = np.stack([preprocess(p.read_bytes()) for p in unseen])
    served = encoder.embed(inputs)  # backbone + head in one call, any batch size
    assert served.shape == (8, 64)

    # the same head in torch, on top of the base ONNX features, agrees with the one graph
    head = ProjectionHead(64)
    head.load_state_dict(torch.load(out / HEAD_FILE, weights_only=True)["state_dict"])
    base = OnnxEncoder(model_dir, threads=1).embed(inputs)
    with torch.no_grad():
        expected = head(torch.from_numpy(base)).numpy()
    assert np.min(np.sum(served * expected, axis=1)) >= 0.9999

    # the similarity scale maps the service's collapse threshold onto this model's
    scale = metadata.similarity_scale
    assert len(scale["base"]) == len(scale["trained"]) > 10
    assert scale["base"] == sorted(scale["base"]) and scale["trained"] == sorted(scale["trained"])
    assert summary["dedup_threshold"] == round(translate_threshold(0.96, scale), 4)
