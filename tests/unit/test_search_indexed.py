"""Search by a stored image's id with the vector the index holds for it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from index.remote import RemoteShard, create_shard_api
from index.search import SearchService
from index.shard import IndexShard
from visearch.serving import serve_in_thread

DIM = 16


class NoEncoder:
    """An encoder that must not be called: the indexed vector is the query."""

    version = "v1"
    metadata = SimpleNamespace(similarity_scale={})

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        raise AssertionError("the indexed vector should have been used")


@pytest.fixture
def shard() -> IndexShard:
    rng = np.random.default_rng(3)
    shard = IndexShard(DIM, "v1", [0, 1])
    for i in range(40):
        vector = rng.standard_normal(DIM).astype(np.float32)
        shard.partitions[i % 2].upsert(f"img-{i}", vector / np.linalg.norm(vector), 100.0 + i)
    return shard


def _service(shard, **kwargs) -> SearchService:  # type: ignore[no-untyped-def]
    return SearchService(NoEncoder(), [shard], dedup_threshold=1.01, **kwargs)  # type: ignore[arg-type]


def test_indexed_vector_answers_like_a_search_with_that_vector(shard: IndexShard) -> None:
    service = _service(shard)
    result = service.search_indexed("img-7", not_before=107.0, k=5)
    assert result is not None  # and NoEncoder was not called
    vector = shard.vector_of("img-7")
    assert vector is not None
    expected = service.search_vector(vector, 5, exclude_image_id="img-7")
    assert [h.image_id for h in result.hits] == [h.image_id for h in expected]
    assert "img-7" not in [h.image_id for h in result.hits]
    assert result.timings_ms["embed"] == 0 and result.model_version == "v1"


def test_not_used_when_the_store_holds_newer_bytes_than_the_index(shard: IndexShard) -> None:
    service = _service(shard)
    # The store's copy was uploaded after the indexed one: a re-upload not yet embedded.
    assert service.search_indexed("img-7", not_before=107.5, k=5) is None


def test_not_used_for_hidden_or_unknown_images(shard: IndexShard) -> None:
    service = _service(shard)
    shard.partitions[1].update("img-7", "private", 200.0)
    assert service.search_indexed("img-7", 0.0, 5) is None
    assert service.search_indexed("no-such-image", 0.0, 5) is None


def test_used_with_crop_verification_on_which_a_whole_indexed_image_needs_not(
    shard: IndexShard,
) -> None:
    """A verifier that fails if called: a stored whole image is searched with its vector."""

    class Untouchable:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"crop verification used for a search by id ({name})")

    verifying = _service(shard, verifier=Untouchable())
    result = verifying.search_indexed("img-8", 0.0, 5)
    assert result is not None and result.timings_ms["embed"] == 0.0


def test_remote_shard_serves_the_indexed_vector(shard: IndexShard) -> None:
    with serve_in_thread(create_shard_api(shard, 0)) as url:
        remote = RemoteShard(url, DIM)
        found = remote.indexed_vector("img-8")
        assert found is not None
        np.testing.assert_allclose(found[0], shard.vector_of("img-8"), atol=1e-6)
        assert found[1] == 108.0
        assert remote.indexed_vector("no-such-image") is None
