"""``visearch simulate-traffic``: realistic search sessions against a running API.

Each session searches from a random corpus image, logs an impression for
every result shown, then clicks with a position-biased cascade that favours
truly similar results, and logs dwell times. "Truly similar" is ground truth:
by default two images are relevant to each other when they lie in the same
folder of the source tree they were ingested from (``animals/birds/``), with
the ids ``visearch ingest`` gives them — or, with ``--qrels``, an evaluation
set's judgements (any labelled set, e.g. Fashion-MNIST, whose ids carry no
class). The folder cannot be read back from an id alone, because file names
contain ``-`` too (``animals-birds-adelaide-rosella``); only ids that are not
under the source tree fall back to "everything before the last ``-``".
Everything goes
through the public HTTP API, so the simulator exercises exactly what a page
or a backend does.

Click model (per shown result, top down): the user examines position ``p``
with probability ``examine_decay ** p`` and clicks an examined result with
``p_click_relevant`` or ``p_click_irrelevant``; dwell is log-normal around
``dwell_relevant_s`` or ``dwell_irrelevant_s``.
"""

from __future__ import annotations

import random
import time
import urllib.error
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.http_json import request_json


@dataclass(frozen=True)
class ClickModel:
    examine_decay: float = 0.85
    p_click_relevant: float = 0.5
    p_click_irrelevant: float = 0.04
    dwell_relevant_s: float = 25.0
    dwell_irrelevant_s: float = 3.0


@dataclass
class SimulationReport:
    sessions: int = 0
    searches_failed: int = 0
    impressions: int = 0
    clicks: int = 0
    dwells: int = 0
    relevant_clicks: int = 0
    relevant_impressions: int = 0
    search_ms: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        latencies = sorted(self.search_ms)
        p50 = latencies[len(latencies) // 2] if latencies else None
        return {
            "sessions": self.sessions,
            "searches_failed": self.searches_failed,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "dwells": self.dwells,
            "relevant_click_share": self.relevant_clicks / self.clicks if self.clicks else None,
            "relevant_impression_share": (
                self.relevant_impressions / self.impressions if self.impressions else None
            ),
            "ctr": self.clicks / self.impressions if self.impressions else None,
            "search_p50_ms": p50,
        }


def image_group(image_id: str) -> str | None:
    """A guess at the folder part of an ingested id (``animals-birds-cardinal`` ->
    ``animals-birds``); wrong for file names with ``-``, so only for unknown ids."""
    return image_id.rsplit("-", 1)[0] if "-" in image_id else None


def is_relevant(query_id: str, result_id: str) -> bool:
    group = image_group(query_id)
    return group is not None and group == image_group(result_id)


Relevance = Callable[[str, str], bool]  # (query id, result id) -> is the result truly similar?


def folder_relevance(folder_of: Mapping[str, str]) -> Relevance:
    """Same folder, from each image id's folder (:func:`visearch.catalog.corpus.image_folders`);
    ids the mapping lacks fall back to :func:`image_group`."""

    def relevant(query_id: str, result_id: str) -> bool:
        query_folder, result_folder = folder_of.get(query_id), folder_of.get(result_id)
        if query_folder is None or result_folder is None:
            return is_relevant(query_id, result_id)
        return query_folder == result_folder

    return relevant


def qrels_relevance(qrels: Mapping[str, Mapping[str, int]]) -> Relevance:
    """Ground truth from judgements (an evaluation set's TREC qrels: grade > 0 is relevant)
    instead of folder names, so any labelled set can drive the simulation."""

    def relevant(query_id: str, result_id: str) -> bool:
        return qrels.get(query_id, {}).get(result_id, 0) > 0

    return relevant


def session_events(
    rng: random.Random,
    model: ClickModel,
    user_id: str,
    query_id: str,
    response: dict[str, Any],
    now: float,
    relevant: Relevance = is_relevant,
) -> list[dict[str, Any]]:
    """The interaction events of one simulated session over a search response."""
    search_id = response["search_id"]
    common = {
        "user_id": user_id,
        "search_id": search_id,
        "query_image_id": query_id,
        "model_version": response.get("model_version", ""),
    }
    events: list[dict[str, Any]] = []
    for position, hit in enumerate(response["results"]):
        shown = {**common, "displayed_image_id": hit["image_id"], "position": position}
        events.append(
            {
                **shown,
                "event_id": f"{search_id}-i{position}",
                "type": "impression",
                "timestamp": now,
            }
        )
        if rng.random() > model.examine_decay**position:
            continue
        similar = relevant(query_id, hit["image_id"])
        if rng.random() < (model.p_click_relevant if similar else model.p_click_irrelevant):
            mean = model.dwell_relevant_s if similar else model.dwell_irrelevant_s
            dwell_ms = int(rng.lognormvariate(0, 0.5) * mean * 1000)
            events.append(
                {**shown, "event_id": f"{search_id}-c{position}", "type": "click",
                 "timestamp": now + 1 + position}
            )  # fmt: skip
            events.append(
                {**shown, "event_id": f"{search_id}-d{position}", "type": "dwell",
                 "timestamp": now + 1 + position, "dwell_ms": dwell_ms}
            )  # fmt: skip
    return events


class ApiClient:
    """The few API calls the simulator makes, with urllib (no extra dependency)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def corpus(self, limit: int = 500) -> list[str]:
        ids: list[str] = []
        while True:
            page = request_json(
                f"{self.base_url}/v1/corpus?limit={limit}&offset={len(ids)}",
                timeout_s=self.timeout_s,
            )
            ids.extend(page["image_ids"])
            if not page["image_ids"] or len(ids) >= page["total"]:
                return ids

    def search(self, image_id: str, k: int) -> dict[str, Any]:
        body = urllib.parse.urlencode({"image_id": image_id, "k": str(k)}).encode()
        return request_json(
            self.base_url + "/v1/search",
            "POST",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout_s=self.timeout_s,
        )

    def log(self, events: list[dict[str, Any]]) -> None:
        request_json(
            self.base_url + "/v1/interactions",
            "POST",
            json_body={"events": events},
            timeout_s=self.timeout_s,
        )


def simulate(
    client: ApiClient,
    sessions: int,
    users: int = 50,
    k: int = 10,
    rate_per_s: float = 0.0,
    seed: int = 0,
    model: ClickModel | None = None,
    relevant: Relevance = is_relevant,
) -> SimulationReport:
    """Run ``sessions`` sessions (at most ``rate_per_s`` per second when > 0); users
    click results that ``relevant`` judges truly similar (default: same folder)."""
    rng = random.Random(seed)
    model = model or ClickModel()
    corpus = client.corpus()
    if not corpus:
        raise RuntimeError("the corpus is empty: ingest images first")
    report = SimulationReport()
    started = time.monotonic()
    for number in range(sessions):
        if rate_per_s > 0:
            time.sleep(max(0.0, started + number / rate_per_s - time.monotonic()))
        query = rng.choice(corpus)
        begin = time.perf_counter()
        try:
            response = client.search(query, k)
        except urllib.error.HTTPError:
            report.searches_failed += 1  # e.g. deleted meanwhile
            continue
        report.search_ms.append((time.perf_counter() - begin) * 1000)
        user = f"sim-user-{rng.randrange(users)}-{uuid.UUID(int=seed).hex[:6]}"
        events = session_events(rng, model, user, query, response, time.time(), relevant)
        client.log(events)
        report.sessions += 1
        for event in events:
            if event["type"] == "impression":
                report.impressions += 1
                report.relevant_impressions += relevant(query, event["displayed_image_id"])
            elif event["type"] == "click":
                report.clicks += 1
                report.relevant_clicks += relevant(query, event["displayed_image_id"])
            else:
                report.dwells += 1
    return report
