"""The feedback loop on the real broker: interactions in, CTR / time spent / pairs out.

One interactions partition, so that a later event closes an earlier session
(the watermark is per partition) and the test can reason about order.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from feedback.service import FeedbackService
from feedback.simulate import ApiClient, simulate
from feedback.trainer_feed import INTERACTIONS, PAIRS, export_log, load_interactions, load_pairs
from streams.schemas import DeadLetter, decode
from visearch.api.from_stack import stack_api
from visearch.catalog.corpus import DEMO_CORPUS, image_id_for
from visearch.catalog.uploads import accept_upload
from visearch.cli.main import build_parser
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration

STACK_SETTINGS = {
    "interaction_partitions": 1,
    "feedback_session_gap_s": 30.0,
    "feedback_checkpoint_interval_s": 0.2,
}
T0 = time.time() - 600  # event times in the recent past (not "future", not "late")


# The serving model's version: only versions the model registry names are labels.
SERVING: dict[str, str] = {}


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> TestClient:
    assert stack.search is not None
    SERVING["version"] = stack.search.encoder.version
    return TestClient(stack_api(stack))


def interaction(event_id, type_, position, search="s-1", ts=T0, **extra):
    fields = {
        "event_id": event_id,
        "user_id": "user-1",
        "search_id": search,
        "query_image_id": "fb-0000",
        "displayed_image_id": f"shown-{position}",
        "position": position,
        "type": type_,
        "timestamp": ts,
        "model_version": SERVING["version"],
    }
    fields.update(extra)
    return fields


def wait_for(client: TestClient, predicate, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        summary = client.get("/v1/feedback").json()
        if predicate(summary) or time.monotonic() > deadline:
            return summary
        time.sleep(0.05)


def test_interactions_become_ctr_time_spent_metrics_and_pairs(
    client: TestClient,
    stack: LocalStack,
    tmp_path: Path,
    read_topic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    session = [interaction(f"imp-{p}", "impression", p) for p in range(6)]
    session += [
        interaction("click-3", "click", 3, ts=T0 + 2),
        interaction("dwell-3", "dwell", 3, ts=T0 + 20, dwell_ms=12_000),
    ]
    response = client.post("/v1/interactions", json={"events": session})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 8}
    # delivered again (a retrying client): must count once
    assert client.post("/v1/interactions", json={"events": session[:3]}).status_code == 202

    summary = wait_for(
        client,
        lambda s: s["events"].get("counted", 0) >= 8 and s["events"].get("duplicate", 0) >= 3,
    )
    assert (summary["impressions"], summary["clicks"]) == (6, 1)
    assert summary["events"]["duplicate"] == 3
    assert summary["ctr"] == pytest.approx(1 / 6)
    by_position = {row["key"]: row for row in summary["by_position"]}
    assert by_position["3-4"]["clicks"] == 1 and by_position["0"]["clicks"] == 0
    assert summary["by_model"] == [
        {"key": SERVING["version"], "impressions": 6, "clicks": 1, "ctr": pytest.approx(1 / 6)}
    ]
    assert summary["time_spent_s"]["daily"] == pytest.approx(12.0)

    metrics = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }
    labels = (("model_version", SERVING["version"]), ("position_bucket", "3-4"))
    assert metrics[("visearch_feedback_clicks_total", labels)] == 1
    assert metrics[("visearch_feedback_impressions_total", labels)] == 2
    assert metrics[("visearch_feedback_dwell_seconds_count", ())] == 1
    assert metrics[("visearch_feedback_dwell_seconds_sum", ())] == pytest.approx(12.0)
    assert metrics[("visearch_feedback_window_ctr", (("window", "1h"),))] == pytest.approx(1 / 6)

    # a later session's event moves the watermark past the first session's gap
    later = interaction("imp-later", "impression", 0, search="s-2", ts=T0 + 60)
    assert client.post("/v1/interactions", json={"events": [later]}).status_code == 202
    summary = wait_for(client, lambda s: s["pairs_emitted"] >= 1)
    assert summary["pairs_emitted"] == 1
    stack.feedback.consumer.save_checkpoint()  # flushes the pair to the topic
    out = tmp_path / "pairs.jsonl"
    exported = export_log(stack.settings, PAIRS, out, idle_s=1.0)
    assert exported.written == 1
    (pair,) = load_pairs(out)
    assert (pair.query_image_id, pair.positive_image_id, pair.position) == ("fb-0000", "shown-3", 3)
    assert pair.negative_image_ids[:3] == ["shown-0", "shown-1", "shown-2"]
    assert set(pair.negative_image_ids[3:]) == {"shown-4", "shown-5"}
    assert pair.model_version == SERVING["version"] and pair.weight == 1.0

    # the raw log, for click-derived judgements: every event once, the retried three dropped
    log_file = tmp_path / "interactions.jsonl"
    logged = export_log(stack.settings, INTERACTIONS, log_file, idle_s=1.0)
    ours = [e for e in load_interactions(log_file) if e.search_id in ("s-1", "s-2")]
    assert sorted(e.event_id for e in ours) == sorted(
        [e["event_id"] for e in session] + ["imp-later"]
    )
    assert logged.duplicates >= 3 and logged.undecodable == 0
    columns = tmp_path / "interactions.parquet"  # the same export as Parquet: the same records
    as_parquet = export_log(stack.settings, INTERACTIONS, columns, idle_s=1.0)
    assert as_parquet.written == logged.written and as_parquet.next_offsets == logged.next_offsets
    assert load_interactions(columns) == load_interactions(log_file)
    pairs_parquet = tmp_path / "pairs.parquet"
    export_log(stack.settings, PAIRS, pairs_parquet, idle_s=1.0)
    assert load_pairs(pairs_parquet) == load_pairs(out)
    assert (
        export_log(stack.settings, INTERACTIONS, log_file, since=T0 + 30, idle_s=1.0).written >= 1
    )
    assert "imp-0" not in {e.event_id for e in load_interactions(log_file)}
    # the command line's handler picks the topic from the command it was parsed from
    for command, identity in (("interactions", "event_id"), ("pairs", "pair_id")):
        out_file = tmp_path / f"{command}-cli.jsonl"
        args = build_parser().parse_args(
            [command, "export", "--out", str(out_file), "--idle-s", "1"]
        )
        assert args.func(stack.settings, args) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["written"] == len(out_file.read_text().splitlines()) >= 1
        assert all(identity in json.loads(line) for line in out_file.read_text().splitlines())


def test_a_bad_batch_is_refused_whole_with_every_reason(client: TestClient) -> None:
    before = client.get("/v1/feedback").json()["events"].get("counted", 0)
    events = [
        interaction("ok-1", "impression", 0, search="s-bad"),
        interaction("neg", "impression", -1, search="s-bad"),
        {"event_id": "missing-fields"},
        interaction("typo", "clik", 0, search="s-bad"),
    ]
    response = client.post("/v1/interactions", json={"events": events})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["code"] == "bad_interactions"
    assert [(e["index"], e["code"]) for e in detail["errors"]] == [
        (1, "invalid_value"),
        (2, "missing_field"),
        (3, "invalid_value"),
    ]
    assert "position" in detail["errors"][0]["message"]
    too_many = [interaction(f"m{i}", "impression", 0) for i in range(501)]
    assert client.post("/v1/interactions", json={"events": too_many}).status_code == 413
    assert client.post("/v1/interactions", json={"events": []}).status_code == 422
    time.sleep(0.5)
    assert client.get("/v1/feedback").json()["events"].get("counted", 0) == before


def test_undecodable_late_and_future_events_are_dead_lettered(
    client: TestClient, stack: LocalStack, read_topic
) -> None:
    assert stack.publisher is not None
    topic = stack.settings.topics.interactions
    stack.publisher.publish_raw(topic, b"s-x", b"{not json").get(10)
    late = interaction("too-late", "impression", 0, search="s-x", ts=T0 - 7200)
    future = interaction("future", "impression", 0, search="s-x", ts=time.time() + 3600)
    for event in (late, future):
        stack.publisher.publish_raw(topic, b"s-x", json.dumps(event).encode()).get(10)
    summary = wait_for(
        client, lambda s: s["events"].get("late_event", 0) and s["events"].get("future_timestamp")
    )
    assert summary["events"]["late_event"] == 1 and summary["events"]["future_timestamp"] == 1
    stack.feedback.consumer.save_checkpoint()
    raw_letters = read_topic(stack.settings, stack.settings.topics.dead_letter, 1)
    letters = [decode(DeadLetter, raw) for raw in raw_letters]
    codes = {letter.error_code for letter in letters if letter.source_topic == topic}
    assert {"not_json", "late_event", "future_timestamp"} <= codes
    # counted by reason on /metrics, from the dead-letter topic itself
    deadline = time.monotonic() + 10
    while True:
        samples = {
            (sample.labels["source"], sample.labels["code"]): sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            if family.name == "visearch_dead_letters"
            for sample in family.samples
            if sample.name == "visearch_dead_letters_total"
        }
        if len(samples) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for code in ("not_json", "late_event", "future_timestamp"):
        assert samples[("interactions", code)] == 1


def caught_up(service: FeedbackService, offsets: dict, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while service.summary()["offsets"] != offsets and time.monotonic() < deadline:
        time.sleep(0.05)
    return service.summary()


def test_replay_from_offset_zero_and_restart_from_checkpoint_reproduce_every_counter(
    client: TestClient, stack: LocalStack, tmp_path: Path
) -> None:
    assert stack.feedback is not None
    wait_for(client, lambda s: s["events"].get("counted", 0) >= 9)
    live = stack.feedback.summary()
    assert live["impressions"] > 0 and live["events"]["duplicate"] > 0
    own = stack.settings.with_overrides(data_dir=tmp_path / "replay")
    with FeedbackService(own) as replayed:  # no checkpoint: from offset 0
        assert caught_up(replayed, live["offsets"]) == live
    # stopped above, so it checkpointed; a restart loads that state before consuming
    with FeedbackService(own) as restarted:
        assert restarted.summary() == live


def test_simulated_traffic_is_counted_exactly_and_clicks_favour_similar_images(
    stack: LocalStack, site: str, photo_paths: list[Path]
) -> None:
    assert stack.publisher is not None and stack.feedback is not None
    ids = []
    for path in photo_paths:
        image_id = "sim-" + image_id_for(path, DEMO_CORPUS)
        accept_upload(stack.settings, stack.store, stack.publisher, image_id, path.read_bytes())
        ids.append(image_id)
    stack.publisher.flush()
    assert stack.wait_searchable(ids, 120) == set()
    before = stack.feedback.summary()

    report = simulate(ApiClient(site), sessions=60, k=8, seed=3)

    assert report.sessions == 60 and report.searches_failed == 0
    assert report.impressions == 60 * 8 and report.clicks > 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = stack.feedback.summary()
        if after["impressions"] - before["impressions"] >= report.impressions:
            break
        time.sleep(0.05)
    assert after["impressions"] - before["impressions"] == report.impressions
    assert after["clicks"] - before["clicks"] == report.clicks
    assert after["dwell"]["events"] - before["dwell"]["events"] == report.dwells
    # clicks favour truly similar results: far above their share of what was shown
    relevant_shown = report.relevant_impressions / report.impressions
    assert report.relevant_clicks / report.clicks > 2 * relevant_shown
