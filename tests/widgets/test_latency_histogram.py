"""LatencyHistogram: log buckets, merged bars, interpolated percentiles, markers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pytestqt.qtbot import QtBot

from widgets.format import format_duration
from widgets.histogram import LatencyHistogram, bucket_edges, place_labels, quantile

# The engine's telemetry buckets: upper bounds 10% apart from 50 µs (engine/telemetry.py).
ENGINE_BOUNDS = [50e-6 * 1.1**i for i in range(int(math.log(600.0 / 50e-6, 1.1)) + 2)]


def test_bucket_edges_with_overflow() -> None:
    lower, upper = bucket_edges([1.0, 2.0, 4.0], 4)
    assert lower.tolist() == [0.5, 1.0, 2.0, 4.0]
    assert upper.tolist() == [1.0, 2.0, 4.0, 8.0]
    with pytest.raises(ValueError):
        bucket_edges([1.0, 2.0], 5)
    with pytest.raises(ValueError):
        bucket_edges([2.0, 1.0], 2)


def test_quantile_interpolates_within_the_bucket() -> None:
    lower, upper = np.array([1.0, 10.0]), np.array([10.0, 100.0])
    counts = np.array([50.0, 50.0])
    assert quantile(lower, upper, counts, 0.5) == pytest.approx(10.0)
    assert quantile(lower, upper, counts, 0.75) == pytest.approx(math.sqrt(10 * 100))
    assert quantile(lower, upper, counts, 0.25) == pytest.approx(math.sqrt(10))
    assert quantile(lower, upper, np.zeros(2), 0.5) is None


def test_engine_buckets_give_accurate_percentiles(qtbot: QtBot) -> None:
    rng = np.random.default_rng(1)
    samples = rng.lognormal(math.log(0.018), 0.5, 50_000)
    counts = np.zeros(len(ENGINE_BOUNDS) + 1)
    np.add.at(counts, np.searchsorted(ENGINE_BOUNDS, samples, side="left"), 1)
    histogram = LatencyHistogram("e2e")
    qtbot.addWidget(histogram)
    histogram.set_buckets(ENGINE_BOUNDS, counts)
    shown = histogram.percentiles()
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        truth = float(np.quantile(samples, q))
        assert shown[name] == pytest.approx(truth, rel=0.05), name  # buckets are 10% wide
    # ~150 engine buckets are merged into a readable number of bars
    assert 10 <= histogram.bar_count() <= 40
    assert histogram.summary_text() == " \u00b7 ".join(
        f"{name} {format_duration(value)}" for name, value in shown.items()
    )


def test_explicit_percentiles_win(qtbot: QtBot) -> None:
    histogram = LatencyHistogram()
    qtbot.addWidget(histogram)
    histogram.set_buckets([0.001, 0.01, 0.1], [5, 10, 1], percentiles={"p99": 0.25})
    assert histogram.percentiles()["p99"] == 0.25
    marker = histogram._markers["p99"]
    assert marker.value() == pytest.approx(math.log10(0.25))
    assert marker.label.toPlainText() == "p99"


def test_samples_and_empty(qtbot: QtBot) -> None:
    histogram = LatencyHistogram()
    qtbot.addWidget(histogram)
    histogram.set_samples([0.010, 0.012, 0.020, 0.5])
    assert histogram.bar_count() > 0
    assert histogram.percentiles()["p50"] == pytest.approx(0.016)
    histogram.set_samples([])
    assert histogram.bar_count() == 0
    assert histogram.percentiles() == {}
    assert all(not m.isVisible() for m in histogram._markers.values())


def test_labels_of_close_markers_never_overlap() -> None:
    # Far apart: every label right of its line, one row.
    assert place_labels([50.0, 200.0, 350.0], [30.0, 30.0, 30.0], 500.0) == [
        (False, 0),
        (False, 0),
        (False, 0),
    ]
    # p95 and p99 10 px apart near the right edge (the Live page's case): p95 goes left of
    # its line; p99 fits neither side, stays inside the plot (left) and takes the next row.
    places = place_labels([100.0, 470.0, 480.0], [30.0, 30.0, 30.0], 500.0)
    assert places[0] == (False, 0)
    assert places[1] == (True, 0)
    assert places[2] == (True, 1)
    # The boxes of labels on one row never meet.
    xs, widths = [100.0, 104.0, 108.0], [30.0, 30.0, 30.0]
    boxes = []
    for x, w, (left, row) in zip(xs, widths, place_labels(xs, widths, 500.0), strict=True):
        boxes.append((x - w if left else x, x if left else x + w, row))
    for i, (a0, a1, ra) in enumerate(boxes):
        for b0, b1, rb in boxes[i + 1 :]:
            assert ra != rb or a1 <= b0 or b1 <= a0, boxes


def test_close_p95_and_p99_labels_are_laid_out_apart(qtbot: QtBot) -> None:
    histogram = LatencyHistogram("Latency distribution")
    qtbot.addWidget(histogram)
    histogram.resize(560, 240)
    histogram.show()
    qtbot.waitExposed(histogram)
    histogram.set_buckets(
        [0.001, 0.01, 0.1], [3, 1, 0], percentiles={"p50": 0.0075, "p95": 0.0102, "p99": 0.0104}
    )
    qtbot.waitUntil(lambda: histogram.getPlotItem().getViewBox().width() > 300)
    places = histogram.label_places()
    assert set(places) == {"p50", "p95", "p99"}
    assert places["p95"] != places["p99"]
    assert places["p95"][1] != places["p99"][1] or places["p95"][0] != places["p99"][0]
    labels = [histogram._markers[name].label for name in ("p50", "p95", "p99")]

    def apart() -> bool:  # the labels are placed once the scene has laid the lines out
        rects = [label.sceneBoundingRect() for label in labels]
        return all(not a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1 :])

    qtbot.waitUntil(apart, timeout=3000)
    plot = histogram.getPlotItem().getViewBox().sceneBoundingRect()
    assert all(plot.contains(label.sceneBoundingRect()) for label in labels)
