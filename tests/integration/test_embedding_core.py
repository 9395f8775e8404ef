"""The embedding step with the real ONNX encoder and real photos (no Kafka needed)."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from encoders.preprocess import ImageLimits, preprocess
from encoders.runtime import OnnxEncoder
from encoders.tiles import tile_boxes
from streams.embedding import RawMessage, UploadReader, embed_prepared, embed_uploads
from streams.schemas import ImageUploaded, encode

pytestmark = pytest.mark.integration


def _message(offset: int, image_id: str, data: bytes) -> RawMessage:
    event = ImageUploaded(
        image_id=image_id,
        owner_id="t",
        uploaded_at=1.0 + offset,
        image_b64=base64.b64encode(data).decode(),
    )
    return RawMessage("uploads", 0, offset, encode(event))


def test_tiles_are_embedded_beside_the_global_vector(
    encoder: OnnxEncoder, photo_paths: list[Path], tmp_path: Path
) -> None:
    data = [path.read_bytes() for path in photo_paths[:3]]
    messages = [_message(i, f"img-{i}", d) for i, d in enumerate(data)]
    messages.insert(1, _message(9, "broken", b"not an image at all"))
    boxes = tile_boxes("quadrants")
    outcome = embed_uploads(messages, encoder, [tmp_path], ImageLimits(), boxes)

    assert [letter.error_code for letter in outcome.dead_letters] == ["undecodable"]
    assert [record.image_id for record in outcome.embedded] == ["img-0", "img-1", "img-2"]
    assert [record.source_offset for record in outcome.embedded] == [0, 1, 2]
    assert outcome.dead_letters[0].offset == 9
    for record, image in zip(outcome.embedded, data, strict=True):
        assert record.tile_count == 5 and record.tiles().shape == (5, encoder.dim)
        # Same preprocessing, same encoder: the vectors are what a query of the
        # whole image, or of exactly that tile, embeds to.
        expected_global = encoder.embed(preprocess(image)[None])[0]
        expected_tile = encoder.embed(preprocess(image, boxes[2])[None])[0]
        assert float(record.vector() @ expected_global) > 0.9999
        assert float(record.tiles()[2] @ expected_tile) > 0.9999
        assert np.allclose(np.linalg.norm(record.tiles(), axis=1), 1.0, atol=1e-4)


def test_batch_without_tiles_has_one_vector_per_image(
    encoder: OnnxEncoder, photo_paths: list[Path], tmp_path: Path
) -> None:
    messages = [_message(i, f"g-{i}", p.read_bytes()) for i, p in enumerate(photo_paths[3:7])]
    outcome = embed_uploads(messages, encoder, [tmp_path], ImageLimits())
    assert len(outcome.embedded) == 4 and not outcome.dead_letters
    assert all(record.tile_count == 0 for record in outcome.embedded)
    vectors = np.stack([record.vector() for record in outcome.embedded])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_parallel_preparation_keeps_order_and_matches_the_serial_path(
    encoder: OnnxEncoder, photo_paths: list[Path], tmp_path: Path
) -> None:
    data = [path.read_bytes() for path in photo_paths[:6]]
    messages = [_message(i, f"p-{i}", d) for i, d in enumerate(data)]
    messages.insert(3, _message(20, "truncated", data[0][: len(data[0]) // 3]))
    messages.insert(5, _message(21, "empty", b""))
    reader = UploadReader([tmp_path], ImageLimits(), tile_boxes("quadrants"))

    serial, serial_letters = reader.prepare_all(messages)
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel, parallel_letters = reader.prepare_all(messages, pool)

    assert [u.event.image_id for u in parallel] == [f"p-{i}" for i in range(6)]
    assert sorted(letter.offset for letter in parallel_letters) == [20, 21]
    assert [letter.offset for letter in parallel_letters] == [
        letter.offset for letter in serial_letters
    ]
    for a, b in zip(serial, parallel, strict=True):
        assert len(b.inputs) == 6
        assert all(np.array_equal(x, y) for x, y in zip(a.inputs, b.inputs, strict=True))
    embedded = embed_prepared(parallel, encoder)
    assert [record.image_id for record in embedded] == [f"p-{i}" for i in range(6)]
    assert embed_prepared([], encoder) == []
