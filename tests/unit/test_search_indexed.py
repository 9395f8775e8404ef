"""Search by a stored image's id with the vector the index holds for it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from index.remote import RemoteShard, create_shard_api
from index.search import SearchService
from index.shard import IndexShard
from visearch.api.serving import serve_in_thread

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
        uri = f"https://images.example.com/img-{i}.jpg" if i % 4 == 0 else ""
        shard.partitions[i % 2].upsert(
            f"img-{i}", vector / np.linalg.norm(vector), 100.0 + i, uri=uri
        )
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
        found = remote.indexed_image("img-8")
        assert found is not None
        np.testing.assert_allclose(found.vector, shard.vector_of("img-8"), atol=1e-6)
        assert found.uploaded_at == 108.0
        assert found.uri == "https://images.example.com/img-8.jpg"
        assert remote.indexed_image("no-such-image") is None


def test_results_carry_the_upload_uri_through_a_remote_shard(shard: IndexShard) -> None:
    """An image that came by http(s) URI is returned with it, over the binary hits
    answer too; one without a URI with an empty one."""
    with serve_in_thread(create_shard_api(shard, 0)) as url:
        hits = RemoteShard(url, DIM).search(shard.vector_of("img-8"), 40, with_vectors=True)
    assert len(hits) == 40
    for hit in hits:
        number = int(hit.image_id.removeprefix("img-"))
        expected = f"https://images.example.com/{hit.image_id}.jpg" if number % 4 == 0 else ""
        assert hit.uri == expected
    local = shard.search(shard.vector_of("img-8"), 40)  # without vectors
    assert {hit.image_id: hit.uri for hit in local} == {hit.image_id: hit.uri for hit in hits}
