"""The attention -> interval rule and the localisation grade, on hand-made maps with known answers."""

import numpy as np
import pytest

from stream_ecg.intervals import IntervalRule, attention_to_intervals, inside_any, runs, snap_to_beats
from stream_ecg.scoring import binary_metrics, grade_window


def test_runs():
    assert runs(np.array([0, 1, 1, 0, 1], bool)).tolist() == [[1, 3], [4, 5]]
    assert runs(np.zeros(4, bool)).shape == (0, 2)


def test_threshold_merge_and_min_length():
    a = np.zeros(1000)
    a[100:200] = 1.0  # a beat
    a[210:260] = 0.8  # the same beat after a short dip: merged
    a[500:510] = 0.9  # too short after merging: dropped
    a[700:800] = 0.4  # below half the peak
    rule = IntervalRule(threshold=0.5, min_len=36, merge_gap=20)
    assert attention_to_intervals(a, rule) == [(100, 260, 1.0)]


def test_flat_or_zero_map_gives_no_interval():
    assert attention_to_intervals(np.zeros(100)) == []
    assert attention_to_intervals(np.full(100, np.nan)) == []


def test_inside_any_with_tolerance():
    iv = [(100, 200, 1.0)]
    assert inside_any(np.array([99, 100, 199, 200]), iv).tolist() == [False, True, True, False]
    assert inside_any(np.array([95, 204]), iv, tol=5).tolist() == [True, True]


@pytest.mark.parametrize(
    "intervals,grade",
    [
        ([(90, 110, 1.0)], (1, 0, 0)),  # abnormal at 100 in, normal at 400 out
        ([(90, 410, 1.0)], (0, 1, 0)),  # both in
        ([(300, 410, 1.0)], (0, 0, 1)),  # abnormal missed
        ([], (0, 0, 1)),
    ],
)
def test_grade_window(intervals, grade):
    g = grade_window(intervals, np.array([100]), np.array([400]))
    assert (g.grade_i, g.grade_ii, g.grade_iii) == grade


def test_grade_summary_rates():
    a = grade_window([(90, 110, 1.0)], np.array([100, 300]), np.array([105, 500, 600]))
    b = grade_window([(0, 50, 1.0)], np.array([10]), np.array([500]))
    s = (a + b).summary()
    assert s["windows"] == 2
    assert s["grade"] == {"I": 0.5, "II": 0.0, "III": 0.5}
    assert s["abnormal_hit_rate"] == pytest.approx(2 / 3)
    assert s["normal_suppression_rate"] == pytest.approx(3 / 4)


def test_binary_metrics_known_values():
    y = np.array([0, 0, 0, 1, 1])
    p0 = np.array([0.9, 0.8, 0.3, 0.2, 0.6])  # probability of class 0 (the positive, PVC)
    m = binary_metrics(y, p0, positive=0)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["auc"] == pytest.approx(5 / 6)  # 5 of the 6 (pos, neg) pairs ordered right


def test_snap_moves_each_interval_onto_the_beat_it_points_at():
    rule = IntervalRule(snap=72, snap_half=36)
    a = np.zeros(2000)
    a[560:700] = np.linspace(0.5, 1.0, 140)  # a bump on the T wave after the beat at 500, peaking at 699
    a[1180:1240] = 0.8  # a bump right on the beat at 1200
    a[1260:1300] = 0.9  # ... and a second one reaching the same beat: published once, with the higher score
    a[1700:1760] = 0.6  # between beats, further than 72 samples from any R peak: dropped
    peaks = np.array([500, 1200, 1990])
    ivs = [(560, 700, 1.0), (1180, 1240, 0.8), (1260, 1300, 0.9), (1700, 1760, 0.6)]
    out = snap_to_beats(ivs, a, peaks, 2000, rule)
    # 699 is nearer the beat at 500 than any other; the interval starts 60 samples from it
    assert out == [(464, 536, 1.0), (1164, 1236, 0.9)]
    assert snap_to_beats(ivs, a, np.zeros(0, np.int64), 2000, rule) == []
    assert snap_to_beats(ivs, a, peaks, 2000, IntervalRule()) == ivs  # snap 0: the map's own extent
    # clipped to the window
    assert snap_to_beats([(1950, 2000, 0.7)], a, peaks, 2000, rule) == [(1954, 2000, 0.7)]
    with pytest.raises(ValueError):
        IntervalRule(snap=-1)
