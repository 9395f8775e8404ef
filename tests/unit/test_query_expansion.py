"""Query expansion: the blend of a query with its best results, and the service's second search."""

from types import SimpleNamespace

import numpy as np
import pytest

from index.partition import Hit
from index.query_expansion import MAX_NEIGHBOURS, QueryExpansion
from index.search import SearchService

DIM = 8


def _unit(vector):
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _axis(i: int) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[i] = 1.0
    return vector


class _ExactShard:
    """Brute-force cosine search over fixed unit vectors (the index's contract, no faiss)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.ids = list(vectors)
        self.matrix = np.stack([vectors[i] for i in self.ids])

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query, k, params=None, with_vectors=False):  # type: ignore[no-untyped-def]
        scores = self.matrix @ query
        order = np.argsort(-scores)[:k]
        return [Hit(self.ids[i], float(scores[i]), self.matrix[i]) for i in order]


def _service(vectors, expansion=None, visible=None):  # type: ignore[no-untyped-def]
    encoder = SimpleNamespace(version="v", metadata=SimpleNamespace(similarity_scale={}))
    return SearchService(
        encoder,  # type: ignore[arg-type]
        [_ExactShard(vectors)],
        dedup_threshold=1.01,
        visible=visible,
        expansion=expansion,
    )


def test_the_query_is_blended_with_its_neighbours_weighted_by_similarity_to_alpha() -> None:
    query = _axis(0)
    hits = [Hit("a", 0.8, _axis(1)), Hit("b", 0.5, _axis(2)), Hit("c", 0.4, _axis(3))]
    expanded = QueryExpansion(neighbours=2, alpha=3.0).expand(query, hits)
    expected = _unit(query + 0.8**3 * _axis(1) + 0.5**3 * _axis(2))  # "c" is beyond 2
    np.testing.assert_allclose(expanded, expected, rtol=1e-6)
    assert np.linalg.norm(expanded) == pytest.approx(1.0)


def test_alpha_zero_averages_and_dissimilar_neighbours_weigh_nothing() -> None:
    query = _axis(0)
    hits = [Hit("a", 0.3, _axis(1)), Hit("far", -0.2, _axis(2))]
    np.testing.assert_allclose(
        QueryExpansion(2, alpha=0.0).expand(query, hits[:1]), _unit(query + _axis(1)), rtol=1e-6
    )
    # a negative similarity counts 0, whatever alpha
    np.testing.assert_allclose(
        QueryExpansion(2, alpha=1.0).expand(query, hits), _unit(query + 0.3 * _axis(1)), rtol=1e-6
    )


def test_no_neighbours_leaves_the_query_as_it_was() -> None:
    query = _unit(np.arange(1, DIM + 1))
    np.testing.assert_allclose(QueryExpansion(3).expand(query, []), query)


def test_a_hit_without_its_vector_is_an_error() -> None:
    with pytest.raises(ValueError, match="no vector"):
        QueryExpansion(1).expand(_axis(0), [Hit("a", 0.9)])


@pytest.mark.parametrize("neighbours, alpha", [(0, 3.0), (MAX_NEIGHBOURS + 1, 3.0), (3, -1.0),
                                               (3, float("nan"))])  # fmt: skip
def test_out_of_range_parameters_are_refused(neighbours: int, alpha: float) -> None:
    with pytest.raises(ValueError, match="query expansion"):
        QueryExpansion(neighbours, alpha)


def _chain():  # type: ignore[no-untyped-def]
    """q's nearest image "near" leads to "bridge", which the query alone ranks below "decoy"."""
    q = _axis(0)
    near = _unit([0.9, 0.44, 0, 0, 0, 0, 0, 0])
    bridge = _unit([0.3, 0.95, 0, 0, 0, 0, 0, 0])
    decoy = _unit([0.45, 0, 0.89, 0, 0, 0, 0, 0])
    return q, {"near": near, "bridge": bridge, "decoy": decoy}


def test_expansion_finds_what_the_query_alone_ranks_lower() -> None:
    q, vectors = _chain()
    assert float(vectors["decoy"] @ q) > float(vectors["bridge"] @ q)
    plain = [h.image_id for h in _service(vectors).search_vector(q, 3)]
    expanded = [h.image_id for h in _service(vectors, QueryExpansion(1)).search_vector(q, 3)]
    assert plain == ["near", "decoy", "bridge"]
    assert expanded == ["near", "bridge", "decoy"]


def test_a_hidden_image_never_shapes_the_expanded_query() -> None:
    q, vectors = _chain()
    hidden = {"near"}
    filtered = _service(vectors, QueryExpansion(1), visible=lambda i: i not in hidden)
    without = _service({k: v for k, v in vectors.items() if k not in hidden}, QueryExpansion(1))
    got = filtered.search_vector(q, 2)
    assert [h.image_id for h in got] == [h.image_id for h in without.search_vector(q, 2)]
    assert "near" not in [h.image_id for h in got]
    # the scores match too: the expanded query is the same as if "near" did not exist
    assert [h.score for h in got] == pytest.approx([h.score for h in without.search_vector(q, 2)])


def test_the_excluded_query_image_is_not_blended_in() -> None:
    q, vectors = _chain()
    vectors = {**vectors, "self": q}
    service = _service(vectors, QueryExpansion(1))
    assert [h.image_id for h in service.search_vector(q, 3, exclude_image_id="self")] == [
        "near", "bridge", "decoy"]  # fmt: skip


def test_the_service_settings_turn_expansion_on() -> None:
    from streams.settings import Settings
    from visearch.processes.shards import query_expansion

    assert query_expansion(Settings()) is None  # off by default
    configured = query_expansion(Settings(query_expansion=4, query_expansion_alpha=1.5))
    assert configured == QueryExpansion(4, 1.5)
    assert query_expansion(Settings(query_expansion=4), neighbours=0) is None


def test_the_settings_bound_is_the_expansions_own() -> None:
    from streams.settings import MAX_QUERY_EXPANSION

    # settings keeps a copy (it imports nothing from index/): the two must agree
    assert MAX_QUERY_EXPANSION == MAX_NEIGHBOURS
