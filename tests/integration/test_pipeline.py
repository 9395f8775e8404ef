"""Upload events become searchable through the real broker, worker, ONNX Runtime and faiss."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import numpy as np
import pytest

from encoders.preprocess import decode_image
from streams.dead_letters import read_dead_letters
from streams.schemas import DeadLetter, ImageUploaded, encode
from visearch.catalog.store import StoredImage
from visearch.catalog.uploads import publish_stored
from visearch.evaluation.crops import hard_crop, jpeg_bytes
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration
TIMEOUT_S = 90.0


def _dead_letters(stack: LocalStack, expected: int) -> list[DeadLetter]:
    deadline = time.monotonic() + TIMEOUT_S
    letters = read_dead_letters(stack.settings)
    while len(letters) < expected and time.monotonic() < deadline:
        letters = read_dead_letters(stack.settings)
    return [letter for _, letter in letters]


def test_bad_events_are_dead_lettered_and_the_stream_goes_on(
    stack: LocalStack, photo_paths: list[Path], publish
) -> None:
    assert stack.publisher is not None and stack.search is not None
    uploads = stack.settings.topics.uploads
    before = publish(stack, photo_paths[:5], "before")
    broken_json = b'{"image_id": "x", '
    corrupt = ImageUploaded(
        image_id="corrupt-1",
        owner_id="t",
        uploaded_at=time.time(),
        image_b64=base64.b64encode(b"\x89PNG\r\n\x1a\n not really a png").decode(),
    )
    outside = ImageUploaded(
        image_id="outside-1", owner_id="t", uploaded_at=time.time(), uri="file:///etc/passwd"
    )
    stack.publisher.publish_raw(uploads, b"x", broken_json)
    stack.publisher.publish(uploads, corrupt.image_id, corrupt)
    stack.publisher.publish(uploads, outside.image_id, outside)
    after = publish(stack, photo_paths[5:10], "after")

    assert stack.wait_searchable(before + after, TIMEOUT_S) == set()
    letters = _dead_letters(stack, 3)
    by_code = {letter.error_code: letter for letter in letters}
    assert set(by_code) == {"not_json", "undecodable", "forbidden_path"}
    assert base64.b64decode(by_code["not_json"].original_b64) == broken_json
    assert base64.b64decode(by_code["undecodable"].original_b64) == encode(corrupt)
    assert all(letter.source_topic == uploads for letter in letters)
    assert "corrupt-1" not in stack.shards[0] and "outside-1" not in stack.shards[0]


def test_each_upload_finds_itself_first(
    stack: LocalStack, photo_paths: list[Path], publish
) -> None:
    assert stack.search is not None
    ids = publish(stack, photo_paths[10:20], "self")
    assert stack.wait_searchable(ids, TIMEOUT_S) == set()
    for image_id in ids:
        hits = stack.search.search_bytes(stack.store.get(image_id), 3).hits
        assert hits[0].image_id == image_id
        assert hits[0].score > 0.999


def test_reupload_is_one_entry_and_private_images_stay_hidden(
    stack: LocalStack, photo_paths: list[Path], publish
) -> None:
    assert stack.publisher is not None and stack.search is not None
    path = photo_paths[20]
    ids = publish(stack, [path], "twice")
    assert stack.wait_searchable(ids, TIMEOUT_S) == set()
    size = stack.search.size
    first_indexed = stack.searchable_at(ids[0])
    publish_stored(stack.settings, stack.store, stack.publisher, stack.store.metadata(ids[0]))
    secret = StoredImage("secret-1", "owner", True, time.time())
    stack.store.put(secret, photo_paths[21].read_bytes())
    publish_stored(stack.settings, stack.store, stack.publisher, secret)
    stack.publisher.flush()
    assert stack.wait_searchable(["secret-1"], TIMEOUT_S) == set()
    deadline = time.monotonic() + TIMEOUT_S
    while stack.searchable_at(ids[0]) == first_indexed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.searchable_at(ids[0]) != first_indexed, "the re-upload was never applied"
    assert stack.search.size == size + 1  # the private image, not a second copy
    hits = stack.search.search_bytes(photo_paths[21].read_bytes(), 20).hits
    assert "secret-1" not in [hit.image_id for hit in hits]
    assert [hit.image_id for hit in stack.search.search_bytes(path.read_bytes(), 2).hits].count(
        ids[0]
    ) == 1


def test_crop_of_a_tile_finds_its_image_through_tile_vectors(
    tmp_path: Path, model_dir: Path, photo_paths: list[Path], make_settings, publish
) -> None:
    from encoders.tiles import tile_boxes

    settings = make_settings(tmp_path, model_dir, tiles="thirds", worker_nice=5, verify_top=8)
    with LocalStack(settings) as tiled:
        assert tiled.search is not None and tiled.worker is not None
        ids = publish(tiled, photo_paths[44:52], "tiled")
        assert tiled.wait_searchable(ids, TIMEOUT_S) == set()
        # The worker lowered its own priority (field 19 of /proc/PID/stat is the nice value).
        stat = Path(f"/proc/{tiled.worker.pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[16]) == 5
        boxes = tile_boxes("thirds")
        for image_id in ids:
            state = tiled.shards[0].partitions
            rows = [p.state_of(image_id) for p in state.values() if p.state_of(image_id)]
            assert rows and rows[0].row_count == 1 + len(boxes) == 17
            for box in boxes[::5]:
                hits = tiled.search.search_bytes(tiled.store.get(image_id), 1, box).hits
                assert hits[0].image_id == image_id
                assert hits[0].score > 0.999  # the query is exactly that tile
        # hard crops uploaded as JPEG: crop verification confirms the source by its pixels
        rng = np.random.default_rng(11)
        for image_id in ids:
            image = decode_image(tiled.store.get(image_id))
            box = hard_crop(image, rng)
            assert box is not None
            crop = jpeg_bytes(image.crop(box.to_pixels(*image.size)))
            result = tiled.search.search_bytes(crop, 3)
            assert result.hits[0].image_id == image_id and result.hits[0].score > 1.9
            assert result.verified >= 1 and "verify" in result.timings_ms


def test_ingest_folder_publishes_images_and_reports_bad_files(
    stack: LocalStack, photo_paths: list[Path], tmp_path: Path
) -> None:
    from visearch.local.ingest import ingest_folder

    assert stack.publisher is not None
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    for i, path in enumerate(photo_paths[56:59]):
        (folder / "sub" / f"photo {i}.png").write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    summary = ingest_folder(stack.settings, stack.store, stack.publisher, folder, progress=False)
    assert summary.published == 3
    assert list(summary.rejected) == [str(folder / "broken.jpg")]
    ids = ["sub-photo_0", "sub-photo_1", "sub-photo_2"]
    assert stack.wait_searchable(ids, TIMEOUT_S) == set()
    again = ingest_folder(stack.settings, stack.store, stack.publisher, folder, progress=False)
    assert again.published == 0 and again.already_stored == 3
