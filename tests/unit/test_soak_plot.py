"""bench/soak.py's plot and process sampling (the load itself is a program, not a test)."""

import os
import xml.etree.ElementTree as ET

from bench.soak import _plot, after_warm_up, cpu_since, rss_mb


def _sample(t_s, api_mb, p95, cores=None):
    return {
        "t_s": t_s,
        "rss_mb": {"api": api_mb, "worker": 300.0, "broker": 20.0},
        "cores": cores or {},
        "search_p50_ms": None if p95 is None else p95 / 2,
        "search_p95_ms": p95,
        "freshness_p99_ms": 120.0,
        "consumer_lag": 3,
        "unindexed": 40,
        "dead_letters": None,
        "leaks": 0,
    }


def test_plot_is_one_svg_with_four_charts_of_every_series():
    cores = {"api": 0.4, "worker": 0.9, "broker": 0.2, "load": 0.1}
    samples = [
        _sample(10.0, 200.0, 40.0),  # the first sample has no cores yet
        _sample(20.0, 210.0, None, cores),
        _sample(30.0, 205.0, 60.0, {**cores, "broker": 0.35}),
    ]
    svg = ET.fromstring(_plot(samples))
    polylines = svg.findall(".//{http://www.w3.org/2000/svg}polyline")
    assert len(svg.findall("{http://www.w3.org/2000/svg}g")) == 4
    assert len(polylines) == 3 + 4 + 3 + 4
    titles = [p.find("{http://www.w3.org/2000/svg}title").text for p in polylines]
    assert titles[:7] == ["RSS api", "RSS worker", "RSS broker"] + [f"cores {n}" for n in cores]
    assert "RSS (1 = 300 MB)" in _plot(samples)  # each chart scaled to its largest value
    assert "CPU (1 = 0.90 cores)" in _plot(samples)
    for polyline in polylines:
        ys = [float(point.split(",")[1]) for point in polyline.get("points").split()]
        assert all(16 <= y <= 340 - 44 for y in ys)  # inside the plot area


def test_rss_of_this_process():
    assert 10 < rss_mb(os.getpid()) < 100_000


def _samples(uploads: list[int]) -> list[dict[str, object]]:
    return [{"t_s": 10.0 * i, "uploads_total": n} for i, n in enumerate(uploads)]


def test_warm_up_lasts_until_the_id_space_is_full():
    samples = _samples([500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000])
    # a fifth of the run is 2 samples, but two rounds of 1,500 ids end at sample 5
    assert [s["t_s"] for s in after_warm_up(samples, 1500)] == [50.0, 60.0, 70.0, 80.0, 90.0]
    assert len(after_warm_up(samples, 0)) == 8  # fresh ids: the first fifth only
    # never filled: the last fifth, rather than nothing
    assert [s["t_s"] for s in after_warm_up(samples, 10**6)] == [80.0, 90.0]
    assert after_warm_up(samples[:3], 3000) == samples[:3]


def test_warm_up_lasts_until_the_feedback_horizon_has_passed():
    samples = _samples([500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000])
    # the id space is full at sample 5; the feedback state grows until t = 70 s
    assert [s["t_s"] for s in after_warm_up(samples, 1500, 70.0)] == [70.0, 80.0, 90.0]
    assert after_warm_up(samples, 1500, 20.0)[0]["t_s"] == 50.0
    # a horizon longer than the run: the last fifth
    assert [s["t_s"] for s in after_warm_up(samples, 0, 3600.0)] == [80.0, 90.0]


def test_cpu_since_the_last_sample_is_never_negative():
    assert cpu_since((41, 2.0), 41, 2.5) == 0.5  # the same process: the difference
    assert cpu_since((41, 2.0), 42, 0.25) == 0.25  # restarted since: all of the new one's
    assert cpu_since(None, 42, 0.75) == 0.75  # not there at the last sample
    assert cpu_since((41, 2.0), 41, 0.0) == 0.0  # gone: /proc reads 0
