"""The feedback aggregator: dedup, event-time windows, lateness, replay, time spent."""

import random

import pytest

from feedback.aggregation import CLICKS, IMPRESSIONS, AggregationPolicy, PartitionAggregator
from feedback.summary import FeedbackView
from feedback.windows import DAY_S, WINDOWS, position_bucket
from streams.schemas import Interaction

T0 = 1_700_000_000.0 - (1_700_000_000.0 % DAY_S)  # a day boundary


def event(event_id, type_="impression", ts=T0, position=0, search="s1", user="u1", **extra):
    fields = {
        "event_id": event_id,
        "user_id": user,
        "search_id": search,
        "query_image_id": "q1",
        "displayed_image_id": f"d{position}",
        "position": position,
        "type": type_,
        "timestamp": ts,
        "model_version": "m1",
    }
    fields.update(extra)
    return Interaction(**fields)


def feed(agg, events):
    return [agg.process(e, e.timestamp) for e in events]


def test_position_buckets_are_exact_at_the_top_then_widen():
    assert [position_bucket(p) for p in (0, 1, 2, 3, 4, 5, 9, 10, 19, 20, 500)] == [
        "0", "1", "2", "3-4", "3-4", "5-9", "5-9", "10-19", "10-19", "20+", "20+",
    ]  # fmt: skip


def test_an_event_delivered_twice_counts_once():
    agg = PartitionAggregator()
    outcomes = feed(agg, [event("e1"), event("e1"), event("e2", "click"), event("e2", "click")])
    assert [o.status for o in outcomes] == ["counted", "duplicate", "counted", "duplicate"]
    assert agg.totals[("0", "m1")] == [1, 1]
    assert agg.status_counts == {"counted": 2, "duplicate": 2}


def test_out_of_order_events_land_in_their_own_windows():
    agg = PartitionAggregator()
    feed(agg, [event("late-first", ts=T0 + 130), event("earlier", "click", ts=T0 + 65)])
    minute = agg.windows["1m"]
    assert minute[int(T0) + 120]["all"][IMPRESSIONS] == 1
    assert minute[int(T0) + 120]["all"][CLICKS] == 0
    assert minute[int(T0) + 60]["all"][CLICKS] == 1
    assert agg.windows["1h"][int(T0)]["all"][:2] == [1, 1]
    assert agg.watermark == T0 + 130  # an earlier event does not move the watermark back


def test_events_beyond_the_allowed_lateness_are_rejected_not_counted():
    agg = PartitionAggregator(AggregationPolicy(allowed_lateness_s=100))
    outcomes = feed(
        agg, [event("a", ts=T0 + 1000), event("b", ts=T0 + 899), event("c", ts=T0 + 901)]
    )
    assert [o.status for o in outcomes] == ["counted", "late_event", "counted"]
    assert agg.totals[("0", "m1")] == [2, 0]


def test_timestamps_too_far_after_the_record_time_are_rejected():
    agg = PartitionAggregator(AggregationPolicy(max_future_s=300))
    assert agg.process(event("a", ts=T0 + 301), record_time=T0).status == "future_timestamp"
    assert agg.process(event("b", ts=T0 + 299), record_time=T0).status == "counted"


def test_dedup_ids_expire_with_the_lateness_horizon_so_memory_is_bounded():
    agg = PartitionAggregator(AggregationPolicy(allowed_lateness_s=60))
    feed(agg, [event(f"e{i}", ts=T0 + i * 10) for i in range(100)])
    # ids inside the last 60 s, and at most one 1-s bucket more, are kept
    assert 6 <= len(agg.seen) <= 8


def test_old_windows_are_dropped_after_their_retention():
    agg = PartitionAggregator()
    feed(agg, [event("a", ts=T0), event("b", ts=T0 + 3 * 3600)])
    assert int(T0) not in agg.windows["1m"]  # 1-minute windows are kept 2 hours
    assert int(T0) in agg.windows["1h"]


def random_log(seed, partitions=4, events=3000):
    rng = random.Random(seed)
    logs = {p: [] for p in range(partitions)}
    for i in range(events):
        search = f"s{rng.randrange(300)}"
        partition = hash(search) % partitions
        ts = T0 + i * 2 + rng.uniform(-200, 0)  # mostly increasing, some disorder
        type_ = rng.choice(["impression"] * 6 + ["click", "dwell"])
        logs[partition].append(
            event(
                f"e{i}",
                type_,
                ts,
                position=rng.randrange(25),
                search=search,
                user=f"u{rng.randrange(40)}",
                dwell_ms=rng.randrange(60_000) if type_ == "dwell" else 0,
                model_version=rng.choice(["m1", "m2"]),
            )
        )
        if rng.random() < 0.05:  # redelivery
            logs[partition].append(logs[partition][rng.randrange(len(logs[partition]))])
    return logs


def run_interleaved(logs, seed):
    rng = random.Random(seed)
    aggs = {p: PartitionAggregator(AggregationPolicy(session_gap_s=120)) for p in logs}
    cursors = dict.fromkeys(logs, 0)
    pairs = []
    while any(cursors[p] < len(logs[p]) for p in logs):
        p = rng.choice([p for p in logs if cursors[p] < len(logs[p])])
        e = logs[p][cursors[p]]
        cursors[p] += 1
        pairs.extend(aggs[p].process(e, e.timestamp).pairs)
    return aggs, pairs


def test_replay_in_another_interleaving_reproduces_every_counter():
    logs = random_log(7)
    first, first_pairs = run_interleaved(logs, 1)
    second, second_pairs = run_interleaved(logs, 2)
    for p in logs:
        assert first[p].to_json() == second[p].to_json()
    assert FeedbackView(first.values()).summary() == FeedbackView(second.values()).summary()
    assert sorted(x.pair_id for x in first_pairs) == sorted(x.pair_id for x in second_pairs)
    assert FeedbackView(first.values()).status_counts()["duplicate"] > 0


def test_a_checkpoint_round_trip_mid_stream_changes_nothing():
    log = random_log(3, partitions=1)[0]
    straight = PartitionAggregator()
    feed(straight, log)
    resumed = PartitionAggregator()
    feed(resumed, log[:1000])
    resumed = PartitionAggregator.from_json(resumed.to_json())
    feed(resumed, log[1000:])
    assert resumed.to_json() == straight.to_json()


def test_window_ctr_and_position_table():
    agg = PartitionAggregator()
    feed(
        agg,
        [event(f"i{p}", position=p) for p in range(4)]
        + [event("c0", "click", position=0), event("c3", "click", position=3)],
    )
    view = FeedbackView([agg])
    live = view.window_ctr("1m")
    assert (live["impressions"], live["clicks"]) == (4, 2)
    assert live["ctr"] == pytest.approx(0.5)
    table = {row["key"]: row for row in view.by_position()}
    assert table["0"]["ctr"] == pytest.approx(1.0)
    assert table["1"]["ctr"] == pytest.approx(0.0)
    assert table["3-4"]["ctr"] == pytest.approx(1.0)
    assert table["20+"]["ctr"] is None  # nothing shown: no CTR, not 0


def test_time_spent_averages_per_active_user():
    agg = PartitionAggregator(AggregationPolicy(allowed_lateness_s=7000))
    other = PartitionAggregator()
    dwell = [
        event("a", "dwell", ts=T0 + 10, user="u1", dwell_ms=30_000),
        event("b", "dwell", ts=T0 + 20, user="u2", dwell_ms=10_000),
        event("c", "dwell", ts=T0 + 2 * DAY_S, user="u1", dwell_ms=20_000),
    ]
    feed(agg, dwell[:2])
    feed(other, dwell[2:])
    averages = FeedbackView([agg, other]).time_spent_averages()
    assert averages["daily"] == pytest.approx(20.0)  # last day: u1 only, 20 s
    assert averages["weekly"] == pytest.approx(30.0)  # 60 s over 2 users
    assert averages["monthly"] == pytest.approx(30.0)
    buckets, total_ms = FeedbackView([agg, other]).dwell_histogram()
    assert sum(buckets) == 3 and total_ms == 60_000


def test_retention_shorter_than_lateness_is_refused():
    with pytest.raises(ValueError, match="retention"):
        PartitionAggregator(AggregationPolicy(allowed_lateness_s=WINDOWS[0].retention_s))
