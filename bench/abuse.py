"""Replays the hostile-input table against a running stack, as an attacker would.

``python -m bench.abuse [--quick]`` starts ``visearch run`` (broker, worker,
API with in-process shards and feedback: the processes ``make run`` starts)
with an API token, then plays each row of the probe's table from outside,
over HTTP and Kafka, while a prober asks ``/healthz`` every 20 ms and the
API's RSS is sampled every 20 ms. Per row it prints JSON lines:

- ``outcome_ok``: 1 when every answer was the documented 4xx or dead letter;
- ``healthz_p99_ms`` during the row, against the idle p99 measured first;
- ``rss_peak_growth_mb``: the API's peak RSS during the row minus before it;
- ``rss_retained_mb``: RSS after the row minus before it.

Then freshness at 20 uploads/s (``embedded_at - uploaded_at`` of each
upload, read back from the embeddings log) with a held slow-URI upload and an
EPS upload in flight, against the same rate without them, and the number of
tracebacks in the stack's logs. Clients run in this process; the stack in
its own, so its RSS is its own.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.output import bench_parser, emit, machine
from bench.support import RunningStack, percentile, running_stack
from streams.dead_letters import read_dead_letters
from streams.image_source import file_uri
from streams.log_follower import read_until_idle
from streams.schemas import ImageEmbedded, ImageUploaded, decode
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.models.serving import ensure_exported

BENCH = "abuse"
TOKEN = "abuse-bench-token"
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{ } loop\n"


# ------------------------------------------------------------ shared attack parts


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def huge_sixteen_bit_png(side: int = 6300) -> bytes:
    """A ~77 KB 16-bit greyscale PNG of ``side`` x ``side`` (under the 40 Mpx cap)."""
    grey = np.zeros((side, side), dtype=np.uint16)
    grey[:100, :100] = 60000
    return png_bytes(Image.fromarray(grey))


def huge_rgba_png(side: int = 6300) -> bytes:
    """A ~154 KB transparent RGBA PNG of ``side`` x ``side``."""
    return png_bytes(Image.new("RGBA", (side, side), (0, 0, 0, 0)))


def raw_http(base_url: str, request: bytes, timeout_s: float = 30.0) -> bytes:
    """Send raw bytes to the server; return what it answers until it closes (or times out)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


class HeldImageServer:
    """Serves one image at ``url``; answers nothing (not even a status line) until
    ``release`` is set, then its headers a byte at a time, as the probe's slow server."""

    def __init__(self, image: bytes) -> None:
        self.release = threading.Event()
        self.requested = threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                held.requested.set()
                try:
                    held.release.wait()
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(image)}\r\n\r\n".encode()
                    for byte in head:
                        self.wfile.write(bytes([byte]))
                    self.wfile.write(image)
                except ConnectionError:
                    pass  # the worker gave up at its deadline

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/held"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------- the stack


@dataclass
class Target:
    """A running ``visearch run`` (API token set) and what the rows need to reach it."""

    stack: RunningStack
    public_ids: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def http(self) -> httpx.Client:
        return self.stack.http

    @property
    def auth(self) -> dict[str, str]:
        return self.stack.auth

    def upload_event(self, image_id: str, **source: str) -> None:
        event = ImageUploaded(
            image_id=image_id, owner_id="abuse", uploaded_at=time.time(), **source
        )
        self.stack.publisher.publish(self.settings.topics.uploads, image_id, event)
        self.stack.publisher.flush()

    def dead_letter_codes(self, ids: set[str], timeout_s: float = 60.0) -> dict[str, str]:
        """The dead-letter code of each upload in ``ids`` (waits for all of them)."""
        codes: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        while set(codes) != ids and time.monotonic() < deadline:
            for _, letter in read_dead_letters(self.settings, idle_s=0.5):
                try:
                    image_id = json.loads(base64.b64decode(letter.original_b64))["image_id"]
                except (ValueError, KeyError, TypeError):
                    continue
                if image_id in ids:
                    codes[image_id] = letter.error_code
        return codes


@contextmanager
def attack_target(base: Settings, photos: list[Path], tmp: Path) -> Iterator[Target]:
    """``visearch run`` with an API token and a few public photos uploaded through the API."""
    with running_stack(
        base,
        tmp,
        "abuse",
        api_token=TOKEN,
        image_fetch_allow_networks="127.0.0.1/32",  # the held server; NAT64 & co. stay refused
        image_roots=str(DEMO_CORPUS),
    ) as stack:
        target = Target(stack)
        for n, path in enumerate(photos):
            image_id = f"public-{n:03d}"
            files = {"image": (path.name, path.read_bytes(), "image/png")}
            response = stack.http.post(
                "/v1/images", files=files, data={"image_id": image_id}, headers=target.auth
            )
            response.raise_for_status()
            target.public_ids.append(image_id)
        yield target


# -------------------------------------------------------------------- sampling


class Sampler:
    """``/healthz`` latency and the API's RSS, sampled every ``interval_s`` in threads."""

    def __init__(self, base_url: str, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.health: list[tuple[float, float]] = []  # (time, ms; inf when it failed)
        self.rss: list[tuple[float, float]] = []  # (time, MB)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._probe, args=(base_url,), daemon=True),
            threading.Thread(target=self._measure_rss, daemon=True),
        ]

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _probe(self, base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - began) * 1000
                self.health.append((time.monotonic(), elapsed if ok else float("inf")))
                self._stop.wait(self.interval_s)

    def _measure_rss(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.is_set():
            try:
                kb = int(status.read_text().split("VmRSS:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                return
            self.rss.append((time.monotonic(), kb / 1024))
            self._stop.wait(self.interval_s)

    def rss_now(self) -> float:
        return self.rss[-1][1] if self.rss else 0.0

    def health_p99(self, start: float, end: float) -> float:
        values = [ms for t, ms in self.health if start <= t <= end]
        return percentile(values, 99) if values else float("nan")

    def rss_peak(self, start: float, end: float) -> float:
        return max((mb for t, mb in self.rss if start <= t <= end), default=self.rss_now())


# ------------------------------------------------------------------------ rows


Row = Callable[[Target], str]  # returns "" when every answer was as documented, else why not


def expect(condition: bool, why: str) -> str:
    return "" if condition else why


def row_eps(target: Target) -> str:
    def one(_: int) -> bool:
        response = target.http.post("/v1/search", files={"image": ("x.eps", EPS, "image/x-eps")})
        detail = response.json().get("detail", {})
        return response.status_code == 400 and detail.get("code") == "undecodable"

    with ThreadPoolExecutor(max_workers=45) as pool:
        answers = list(pool.map(one, range(45)))
    target.upload_event("eps-event", image_b64=base64.b64encode(EPS).decode())
    letters = target.dead_letter_codes({"eps-event"})
    return expect(all(answers), "an EPS search was not a 400 undecodable") or expect(
        letters == {"eps-event": "undecodable"}, f"EPS upload event: {letters}"
    )


def row_interaction_lists(target: Target) -> str:
    headers = {"Content-Type": "application/json"}
    small = b'{"events": [' + b",".join([b"0"] * 200_000) + b"]}"
    big = b'{"events": [' + b",".join([b"0"] * 1_000_000) + b"]}"
    first = target.http.post("/v1/interactions", content=small, headers=headers)
    second = target.http.post("/v1/interactions", content=big, headers=headers)
    return expect(
        first.status_code == 422 and len(first.content) < 10_000,
        f"200k zeros: {first.status_code}, {len(first.content)} bytes",
    ) or expect(second.status_code == 413, f"10^6 zeros: {second.status_code}")


def _search_images(target: Target, images: list[bytes]) -> list[tuple[int, str]]:
    """Search with every image at once; (status, error code) of each."""

    def one(data: bytes) -> tuple[int, str]:
        response = target.http.post("/v1/search", files={"image": ("x.png", data, "image/png")})
        return response.status_code, response.json().get("detail", {}).get("code", "")

    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        return list(pool.map(one, images))


def row_decode_memory(target: Target) -> str:
    """The probe's images, four at once: past the decode budget, refused before decoding."""
    answers = _search_images(target, [huge_sixteen_bit_png(), huge_rgba_png()] * 2)
    return expect(answers == [(400, "too_many_pixels")] * 4, f"answers {answers}")


def row_decode_budget(target: Target) -> str:
    """Not an attack: four large images that fit (4000x4000 16-bit PNGs, 46 MiB each to
    decode) at once share the decode budget (96 MiB: two at a time) and are answered."""
    answers = _search_images(target, [huge_sixteen_bit_png(4000)] * 4)
    return expect([status for status, _ in answers] == [200] * 4, f"answers {answers}")


def row_hidden_by_id(target: Target) -> str:
    private_id, flagged_id = target.public_ids[-2:]
    for image_id, action in ((private_id, "private"), (flagged_id, "flag")):
        target.http.patch(f"/v1/images/{image_id}", json={"action": action}, headers=target.auth)
    answers = [
        target.http.post("/v1/search", data={"image_id": image_id, **extra})
        for image_id in (private_id, flagged_id)
        for extra in ({}, {"crop": "0,0,99999,99999"})
    ]
    return expect(
        all(a.status_code == 404 and "x" not in a.json()["detail"]["message"] for a in answers),
        "a hidden image answered something other than 404 unknown_image",
    )


def row_model_labels(target: Target) -> str:
    before = len(target.http.get("/metrics").content)
    now = time.time()
    for batch in range(4):
        events = [
            {
                "event_id": uuid.uuid4().hex,
                "user_id": "u",
                "search_id": f"abuse-{batch}-{n}",
                "query_image_id": "",
                "displayed_image_id": target.public_ids[0],
                "position": 0,
                "type": "impression",
                "timestamp": now,
                "model_version": f"junk-{batch}-{n}",
            }
            for n in range(500)
        ]
        target.http.post("/v1/interactions", json={"events": events}).raise_for_status()
    deadline = time.monotonic() + 30
    while "other" not in target.http.get("/v1/feedback").text and time.monotonic() < deadline:
        time.sleep(0.2)
    metrics = target.http.get("/metrics").text
    feedback = target.http.get("/v1/feedback").text
    return expect(
        "junk-" not in metrics and "junk-" not in feedback and len(metrics) - before < 20_000,
        f"/metrics grew {len(metrics) - before} bytes",
    ) or expect("other" in feedback, "the junk versions were not counted as other")


def row_bodies_before_token(target: Target) -> str:
    head = (
        b"POST /v1/images HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; "
        b"boundary=x\r\nContent-Length: 536870912\r\n"
    )
    anonymous = raw_http(target.base_url, head + b"\r\n")
    authorized = raw_http(target.base_url, head + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    patch = raw_http(
        target.base_url,
        b"PATCH /v1/images/x HTTP/1.1\r\nHost: t\r\nContent-Length: 31457280\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode(),
    )
    return expect(anonymous.startswith(b"HTTP/1.1 401"), "512 MB without token") or expect(
        authorized.startswith(b"HTTP/1.1 413") and patch.startswith(b"HTTP/1.1 413"),
        "oversized bodies with the token",
    )


def row_non_ascii_token(target: Target) -> str:
    answer = raw_http(
        target.base_url,
        b"DELETE /v1/images/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff"
        + TOKEN.encode()
        + b"\r\nConnection: close\r\n\r\n",
    )
    return expect(answer.startswith(b"HTTP/1.1 401"), answer[:40].decode(errors="replace"))


def row_borrowed_file(target: Target) -> str:
    stored = target.settings.image_store_dir / f"{target.public_ids[-1]}.img"  # a private one
    target.upload_event("borrower", uri=file_uri(stored))
    codes = target.dead_letter_codes({"borrower"})
    return expect(codes == {"borrower": "forbidden_path"}, f"{codes}")


def row_ipv6_forms(target: Target) -> str:
    uris = {
        "nat64": "http://[64:ff9b::a9fe:a9fe]/x",
        "compat": "http://[::a00:1]/x",
        "translated": "http://[::ffff:0:a00:1]/x",
        "sixtofour": "http://[2002:a00:1::]/x",
    }
    for image_id, uri in uris.items():
        target.upload_event(image_id, uri=uri)
    codes = target.dead_letter_codes(set(uris))
    return expect(set(codes.values()) == {"forbidden_address"} and len(codes) == 4, f"{codes}")


def row_disclosure(target: Target) -> str:
    models = target.http.get("/v1/models").json()
    ready = target.http.get("/readyz").text
    page = target.http.get("/")
    return expect(
        all("model_dir" not in v for v in models["versions"])
        and "bootstrap" not in ready
        and "server" not in page.headers
        and "content-security-policy" in page.headers
        and page.headers.get("x-content-type-options") == "nosniff",
        "a path, an address or a header",
    )


def row_thumbnail_cache(target: Target) -> str:
    response = target.http.get(f"/v1/images/{target.public_ids[0]}/thumbnail")
    return expect(response.headers.get("cache-control") == "private, no-store", "cache header")


def row_small_ones(target: Target) -> str:
    image_id = target.public_ids[0]
    tiny = target.http.post("/v1/search", data={"image_id": image_id, "crop": "0.1,0.1,0.9,0.9"})
    lower = target.http.patch(
        f"/v1/images/{image_id}",
        json={"action": "public"},
        headers={"Authorization": f"bearer {TOKEN}"},
    )
    offset = target.http.get("/v1/corpus", params={"offset": -3})
    host, port = target.base_url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port))) for _ in range(200)]
    for sock in sockets:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        sock.settimeout(target.settings.http_header_timeout_s + 10)
    closed = 0
    for sock in sockets:
        try:
            closed += sock.recv(1) == b""
        except (TimeoutError, ConnectionResetError):
            closed += 0
        sock.close()
    return expect(tiny.status_code == 422, "tiny crop") or expect(
        lower.status_code == 202 and offset.status_code == 422 and closed == 200,
        f"lowercase bearer {lower.status_code}, offset {offset.status_code}, closed {closed}/200",
    )


ROWS: dict[str, Row] = {
    "1-eps": row_eps,
    "2-interaction-lists": row_interaction_lists,
    "3-decode-memory": row_decode_memory,
    "3b-decode-budget-legit": row_decode_budget,
    "5-hidden-by-id": row_hidden_by_id,
    "6-model-labels": row_model_labels,
    "7-bodies-before-token": row_bodies_before_token,
    "8-non-ascii-token": row_non_ascii_token,
    "9-borrowed-file": row_borrowed_file,
    "10-ipv6-forms": row_ipv6_forms,
    "11-disclosure": row_disclosure,
    "12-thumbnail-cache": row_thumbnail_cache,
    "13-small-ones": row_small_ones,
}


# ------------------------------------------------------------------- freshness


def freshness(
    target: Target, photos: list[Path], rate: float, duration_s: float, tag: str
) -> list[float]:
    """``embedded_at - uploaded_at`` in ms of uploads published at ``rate`` for ``duration_s``."""
    ids = []
    started = time.perf_counter()
    for n in range(int(rate * duration_s)):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        image_id = f"{tag}-{n:05d}"
        event = ImageUploaded(
            image_id=image_id,
            owner_id="abuse",
            uploaded_at=time.time(),
            uri=file_uri(photos[n % len(photos)]),
        )
        target.stack.publisher.publish(target.settings.topics.uploads, image_id, event)
        ids.append(image_id)
    target.stack.publisher.flush()
    wanted = set(ids)
    found: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(found) < len(wanted) and time.monotonic() < deadline:
        topic = target.settings.topics.embeddings
        for record in read_until_idle(
            target.settings.kafka, topic, range(target.settings.embedding_partitions)
        ):
            try:
                embedded = decode(ImageEmbedded, record.value)
            except Exception:
                continue  # updates share the log
            if embedded.image_id in wanted:
                found[embedded.image_id] = (embedded.embedded_at - embedded.uploaded_at) * 1000
    return list(found.values())


def run(quick: bool) -> None:
    base = Settings.from_env()
    ensure_exported(base.resolved_model_dir, DEMO_CORPUS)
    photos = find_images(DEMO_CORPUS)
    context = {"machine": machine(), "quick": quick}
    with (
        tempfile.TemporaryDirectory(prefix="visearch-abuse-") as tmp,
        attack_target(base, photos[:12], Path(tmp)) as target,
        Sampler(target.base_url, target.stack.process.pid) as sampler,
    ):
        time.sleep(3.0)
        idle_p99 = sampler.health_p99(0, time.monotonic())
        for name, row in ROWS.items():
            before = sampler.rss_now()
            began = time.monotonic()
            why = row(target)
            ended = time.monotonic()
            time.sleep(1.0)  # let freed memory go back before reading what stays
            row_context = {"row": name, **context}
            emit(BENCH, "outcome_ok", float(not why), "bool", None, detail=why, **row_context)
            emit(
                BENCH,
                "healthz_p99_ms",
                sampler.health_p99(began, ended),
                "ms",
                idle_p99,
                **row_context,
            )
            emit(
                BENCH,
                "rss_peak_growth_mb",
                sampler.rss_peak(began, ended) - before,
                "MB",
                None,
                **row_context,
            )
            emit(BENCH, "rss_retained_mb", sampler.rss_now() - before, "MB", None, **row_context)

        duration = 10.0 if quick else 30.0
        clean = freshness(target, photos, 20.0, duration, "clean")
        held = HeldImageServer(photos[0].read_bytes())
        try:
            target.upload_event("slow-uri", uri=held.url)
            target.upload_event("eps-in-flight", image_b64=base64.b64encode(EPS).decode())
            held.requested.wait(30)
            began = time.monotonic()
            attacked = freshness(target, photos, 20.0, duration, "attacked")
            ended = time.monotonic()
        finally:
            held.close()
        row_context = {"row": "4-slow-uri-and-eps-in-flight", "rate_per_s": 20.0, **context}
        for q in (50, 99):
            emit(BENCH, f"freshness_p{q}_ms", percentile(attacked, q), "ms", percentile(clean, q),
                 baseline_name="same rate, nothing in flight", **row_context)  # fmt: skip
        emit(BENCH, "embedded", float(len(attacked)), "images", duration * 20.0, **row_context)
        emit(
            BENCH, "healthz_p99_ms", sampler.health_p99(began, ended), "ms", idle_p99, **row_context
        )
        logs = [target.stack.log, *target.settings.data_dir.glob("**/*.log")]
        tracebacks = sum(p.read_text(errors="replace").count("Traceback") for p in set(logs))
        emit(BENCH, "tracebacks_in_logs", float(tracebacks), "count", None, **context)
        emit(
            BENCH,
            "healthz_idle_p99_ms",
            idle_p99,
            "ms",
            None,
            samples=len(sampler.health),
            **context,
        )


def main() -> None:
    parser = bench_parser(__doc__, "10 s freshness phases instead of 30")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
