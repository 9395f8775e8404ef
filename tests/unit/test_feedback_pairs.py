"""Labelled pairs from hand-built sessions, and the position-bias weights."""

import pytest

from feedback.aggregation import AggregationPolicy, PartitionAggregator
from feedback.pairs import PairPolicy, Session, propensity_weight, session_pairs
from streams.schemas import Interaction, LabeledPair, decode, encode

NO_DATA = {0: (0, 0)}


def ctr_table(rates):
    """position -> (impressions, clicks) from a {position: ctr} table, 1000 impressions each."""
    return lambda position: (1000, int(rates.get(position, 0.0) * 1000))


def session(shown, clicked, query="q"):
    return Session(
        search_id="s1",
        user_id="u1",
        query_image_id=query,
        model_version="m1",
        last_seen=100.0,
        shown=dict(enumerate(shown)),
        clicked=clicked,
    )


def test_click_gives_positive_and_skipped_above_negatives_plus_sampled_below():
    shown = ["a", "b", "c", "d", "e", "f", "g"]
    policy = PairPolicy(sampled_negatives=2)
    pairs = session_pairs(session(shown, {"d": 3}), 700.0, ctr_table({}), policy)
    assert len(pairs) == 1
    pair = pairs[0]
    assert (pair.query_image_id, pair.positive_image_id, pair.position) == ("q", "d", 3)
    negatives = pair.negative_image_ids
    assert negatives[:3] == ["a", "b", "c"]  # shown above, skipped
    assert len(negatives) == 5 and set(negatives[3:]) <= {"e", "f", "g"}
    assert pair.pair_id == "s1:3" and pair.created_at == 700.0
    again = session_pairs(session(shown, {"d": 3}), 700.0, ctr_table({}), policy)
    assert again[0].negative_image_ids == negatives  # seeded by the pair id


def test_clicked_results_are_never_negatives_of_another_click():
    pairs = session_pairs(
        session(["a", "b", "c", "d"], {"b": 1, "d": 3}), 1.0, ctr_table({}), PairPolicy()
    )
    assert [p.positive_image_id for p in pairs] == ["b", "d"]
    assert pairs[0].negative_image_ids[0] == "a"
    assert "b" not in pairs[1].negative_image_ids and "d" not in pairs[0].negative_image_ids
    assert pairs[1].negative_image_ids == ["a", "c"]


def test_sessions_without_a_query_image_or_without_clicks_give_nothing():
    assert session_pairs(session(["a"], {"a": 0}, query=""), 1.0, ctr_table({}), PairPolicy()) == []
    assert session_pairs(session(["a", "b"], {}), 1.0, ctr_table({}), PairPolicy()) == []


def test_the_query_image_itself_is_not_a_positive():
    assert session_pairs(session(["q", "a"], {"q": 0}), 1.0, ctr_table({}), PairPolicy()) == []


def test_propensity_weight_is_the_ctr_ratio_clipped():
    table = ctr_table({0: 0.30, 3: 0.10, 9: 0.01, 1: 0.5})
    policy = PairPolicy(max_weight=10.0, min_impressions=100)
    assert propensity_weight(table, 0, policy) == pytest.approx(1.0)
    assert propensity_weight(table, 3, policy) == pytest.approx(3.0)
    assert propensity_weight(table, 9, policy) == pytest.approx(10.0)  # 30, clipped
    assert propensity_weight(table, 1, policy) == pytest.approx(1.0)  # 0.6, clipped up to 1
    sparse = lambda position: (50, 5)  # noqa: E731
    assert propensity_weight(sparse, 3, policy) == 1.0


def _event(event_id, type_, position, ts, search="s9"):
    return Interaction(
        event_id=event_id,
        user_id="u",
        search_id=search,
        query_image_id="q",
        displayed_image_id=f"img{position}",
        position=position,
        type=type_,
        timestamp=ts,
        model_version="m1",
    )


def test_sessions_close_after_the_gap_in_event_time_and_emit_once():
    agg = PartitionAggregator(AggregationPolicy(session_gap_s=60))
    for position in range(5):
        assert agg.process(_event(f"i{position}", "impression", position, 10.0), 10.0).pairs == ()
    assert agg.process(_event("c", "click", 2, 20.0), 20.0).pairs == ()
    closing = agg.process(_event("other", "impression", 0, 81.0, search="s10"), 81.0)
    assert [p.positive_image_id for p in closing.pairs] == ["img2"]
    assert closing.pairs[0].negative_image_ids[:2] == ["img0", "img1"]
    # a straggler of the closed session is counted but does not reopen it
    late = agg.process(_event("c2", "click", 4, 70.0), 82.0)
    assert late.status == "counted" and late.pairs == ()
    assert agg.close_all_sessions() == []  # s10 has no click
    assert agg.status_counts["after_session_close"] == 1


def test_pairs_round_trip_through_the_wire_format():
    pair = session_pairs(session(["a", "b"], {"b": 1}), 5.0, ctr_table({}), PairPolicy())[0]
    assert decode(LabeledPair, encode(pair)) == pair
