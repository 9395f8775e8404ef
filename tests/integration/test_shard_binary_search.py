"""A shard process's binary search path, over real HTTP (uvicorn and its C parser):
the same answers as the in-process shard and as the JSON route, bad bytes
refused with the JSON route's codes, bodies capped, headers capped; and the
scatter that writes every request first and reads answers as they come."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from index.faiss_index import SearchParams
from index.filters import SearchFilter
from index.hits_wire import decode_hits
from index.partition import Upsert
from index.query_wire import HEADER, MEDIA_TYPE, encode_query
from index.remote import RemoteShard, RemoteShardError, create_shard_api
from index.scatter import Scatter, ScatterReport, ShardCopies, ShardsUnavailableError
from index.shard import IndexShard
from streams.broker import free_port
from streams.schemas import vector_to_b64
from visearch.api.serving import serve_in_thread

DIM = 32


@pytest.fixture(scope="module", params=[0, 2], ids=["event-loop", "two-threads"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[IndexShard, str]]:
    shard = IndexShard(DIM, "wire", range(2))
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((400, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for number, part in shard.partitions.items():
        part.upsert_many(
            [
                Upsert(f"p{number}-{n}", vectors[n], 100.0 + n, tags=("even",) if n % 2 else ())
                for n in range(number, 400, 2)
            ]
        )
    with serve_in_thread(create_shard_api(shard, 0, search_threads=request.param)) as url:
        yield shard, url


def test_binary_searches_answer_what_the_shard_answers(served: tuple[IndexShard, str]) -> None:
    shard, url = served
    remote = RemoteShard(url, DIM)
    rng = np.random.default_rng(4)
    even = SearchFilter.of(tags_any=["even"])
    for query in rng.standard_normal((5, DIM)).astype(np.float32):
        for params, with_vectors in ((SearchParams(), True), (SearchParams(where=even), False)):
            local = shard.search(query, 7, params, with_vectors)
            over_http = remote.search(query, 7, params, with_vectors)
            assert [h.image_id for h in over_http] == [h.image_id for h in local]
            assert [h.score for h in over_http] == pytest.approx([h.score for h in local])
            if with_vectors:
                pairs = zip(over_http, local, strict=True)
                assert all(np.array_equal(a.vector, b.vector) for a, b in pairs)  # type: ignore[arg-type]
        # The JSON route answers the same.
        answer = httpx.post(
            f"{url}/v1/shard/search", json={"vector_b64": vector_to_b64(query), "k": 7}
        ).json()
        assert [h["image_id"] for h in answer["hits"]] == [
            h.image_id for h in shard.search(query, 7)
        ]
    remote.close()


def test_bad_binary_requests_get_the_json_routes_codes(served: tuple[IndexShard, str]) -> None:
    _, url = served
    headers = {"Content-Type": MEDIA_TYPE}
    short = encode_query(np.ones(DIM - 1, np.float32), 5, SearchParams(), False)
    answer = httpx.post(f"{url}/v1/shard/search", content=short, headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"]["code"] == "invalid_value"
    bad_filter = HEADER.pack(b"VSQ1", 5, 64, 16, 0, 3) + b"{x]" + np.ones(DIM, "<f4").tobytes()
    answer = httpx.post(f"{url}/v1/shard/search", content=bad_filter, headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"]["code"] == "bad_filter"
    huge = b"VSQ1" + b"\0" * (2 << 20)
    answer = httpx.post(f"{url}/v1/shard/search", content=huge, headers=headers)
    assert answer.status_code == 413
    good = encode_query(np.ones(DIM, np.float32), 5, SearchParams(), False)
    answer = httpx.post(f"{url}/v1/shard/search", content=good, headers=headers)
    assert answer.status_code == 200 and len(decode_hits(answer.content, DIM)) == 5


def test_request_headers_past_16_kib_close_the_connection(served: tuple[IndexShard, str]) -> None:
    _, url = served
    host, port = url.removeprefix("http://").split(":")

    def ask(padding: int) -> bytes:
        request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: %s\r\n\r\n" % (b"p" * padding)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request)
            return sock.recv(65536)

    assert ask(1_000).startswith(b"HTTP/1.1 200")
    assert not ask(40_000).startswith(b"HTTP/1.1 200")


class HoldingServer:
    """A TCP server that reads each request, answers ``reply`` (maybe nothing, maybe
    half an answer) and then holds the connection open without another byte."""

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                connection = self.listener.accept()[0]
            except TimeoutError:
                continue
            self.held.append(connection)
            connection.recv(65536)
            connection.sendall(self.reply)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.held:
            connection.close()
        self.listener.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    server = HoldingServer()
    yield server.url
    server.close()


def test_the_socket_scatter_hedges_fails_over_and_answers_partial(
    served: tuple[IndexShard, str], silent_server: str
) -> None:
    shard, url = served
    query = np.random.default_rng(6).standard_normal(DIM).astype(np.float32)
    want = [h.image_id for h in shard.search(query, 5)]
    refused = f"http://127.0.0.1:{free_port()}"
    copies = [
        ShardCopies(0, [RemoteShard(silent_server, DIM), RemoteShard(url, DIM)]),
        ShardCopies(1, [RemoteShard(refused, DIM), RemoteShard(url, DIM)]),
    ]
    scatter = Scatter(copies, deadline_s=2.0)
    report = ScatterReport()
    started = time.monotonic()
    answers = scatter.search(query, 5, SearchParams(), False, report)
    # shard 0: its first copy never answers, the hedge to the second does (after
    # the default hedging delay); shard 1: its first copy refuses, the second answers.
    assert [[h.image_id for h in hits] for hits in answers] == [want, want]
    assert not report.partial and report.hedges + report.retries >= 1
    assert time.monotonic() - started < 1.0
    # A shard whose only copy never answers: partial at the deadline, the rest kept.
    lonely = Scatter(
        [
            ShardCopies(0, [RemoteShard(silent_server, DIM)]),
            ShardCopies(1, [RemoteShard(url, DIM)]),
        ],
        deadline_s=0.3,
    )
    report = ScatterReport()
    started = time.monotonic()
    answers = lonely.search(query, 5, SearchParams(), False, report)
    assert report.missing == {0} and [[h.image_id for h in hits] for hits in answers] == [want]
    assert 0.3 <= time.monotonic() - started < 1.0
    with pytest.raises(ShardsUnavailableError):
        Scatter(lonely.shards, deadline_s=0.2, strict=True).search(query, 5, SearchParams(), False)


def test_a_shard_that_stalls_mid_answer_is_left_out_at_the_deadline(
    served: tuple[IndexShard, str],
) -> None:
    shard, url = served
    half = HoldingServer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nVSH2")
    query = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)
    # The copy's own read timeout is 5 s; the scatter's deadline (0.3 s) bounds it.
    scatter = Scatter(
        [
            ShardCopies(0, [RemoteShard(half.url, DIM, timeout_s=5)]),
            ShardCopies(1, [RemoteShard(url, DIM)]),
        ],
        deadline_s=0.3,
    )
    report = ScatterReport()
    started = time.monotonic()
    answers = scatter.search(query, 5, SearchParams(), False, report)
    assert time.monotonic() - started < 1.5
    assert report.missing == {0}
    assert [[h.image_id for h in hits] for hits in answers] == [
        [h.image_id for h in shard.search(query, 5)]
    ]
    half.close()


def test_visibility_is_asked_for_many_ids_at_once(served: tuple[IndexShard, str]) -> None:
    shard, url = served
    part = shard.partitions[0]
    part.update("p0-0", "private", 1e9)
    part.update("p0-2", "delete", 1e9)
    asked = ["p0-0", "p0-2", "p0-4", "p1-1", "nobody", *[f"p1-{n}" for n in range(3, 400, 2)]]
    local = shard.visible_ids(asked)
    assert "p0-0" not in local and "p0-2" not in local and "nobody" not in local
    assert {"p0-4", "p1-1"} <= local and len(local) == len(asked) - 3
    remote = RemoteShard(url, DIM)
    assert remote.visible_ids(asked) == local
    # The scatter asks every shard once and unites their answers; a shard with no
    # answering copy hides its images rather than showing them.
    refused = RemoteShard(f"http://127.0.0.1:{free_port()}", DIM)
    both = Scatter([ShardCopies(0, [remote]), ShardCopies(1, [refused])])
    assert both.visible_ids(asked) == local
    assert Scatter([ShardCopies(0, [refused])]).visible_ids(asked) == set()
    part.update("p0-0", "public", 1e9 + 1)
    assert "p0-0" in remote.visible_ids(asked)


def test_lookups_share_the_search_connections(served: tuple[IndexShard, str]) -> None:
    """Status, an image and visibility go over the same kept sockets as searches; an id
    no image can have (a path, a header) is not sent at all."""
    shard, url = served
    remote = RemoteShard(url, DIM)
    assert len(remote) == len(shard)
    found = remote.indexed_image("p0-4")
    local = shard.indexed_image("p0-4")
    assert found is not None and local is not None
    assert np.array_equal(found.vector, local.vector)
    assert found.uploaded_at == local.uploaded_at
    assert "p0-4" in remote and "nobody" not in remote
    for odd in ("../status", "a/b", "x\r\nX-Injected: 1", "x y", "é", "%2e%2e"):
        assert remote.indexed_image(odd) is None and odd not in remote
    remote.search(shard.vector_of("p0-4"), 3)
    assert len(remote._pool._free) == 1  # one connection served every call above
    remote.close()
    # a shard that answers with an error is a RemoteShardError naming the path
    with pytest.raises(RemoteShardError, match=r"/v1/shard/visible.*422"):
        remote = RemoteShard(url, DIM)
        remote._call("POST", "/v1/shard/visible", {"image_ids": "not a list"})
