"""Interval labelling and merging, and the beat/window scoring, on hand-made cases with known answers."""

import numpy as np
import pytest

from stream_ecg.card import load_card
from stream_ecg.postprocess import IntervalMerger, LabelledInterval, label_intervals
from stream_ecg.scoring import (BeatCounts, beat_counts, detection_delays, detection_metrics, distribution, first_window_outcome,
                                 unconfirmed_intervals, window_targets)

TOL = 54  # 150 ms at 360 Hz


def test_merger_reports_each_beat_once_and_forgets_old_ones():
    m = IntervalMerger(horizon=1000)
    assert len(m.add([LabelledInterval(100, 200, "V", 0.7)])) == 1
    assert m.add([LabelledInterval(120, 210, "V", 0.9)]) == []  # same beat seen from the next window
    assert len(m.add([LabelledInterval(120, 210, "S", 0.9)])) == 1  # other class: its own report
    assert m.seen[0].score == 0.9  # the best score is kept
    m.add([LabelledInterval(5000, 5100, "V", 0.8)])
    assert all(s.start >= 4000 for s in m.seen)  # bounded memory


def test_merger_with_confirm_publishes_a_beat_once_a_second_window_lights_it():
    m = IntervalMerger(horizon=1000, confirm=2)
    assert m.add([LabelledInterval(100, 200, "V", 0.7), LabelledInterval(150, 220, "V", 0.8)]) == []  # one window, twice
    assert m.add([LabelledInterval(120, 210, "V", 0.9)]) == [LabelledInterval(100, 220, "V", 0.9)]  # both windows' extent
    assert m.add([LabelledInterval(110, 215, "V", 0.95)]) == []  # published once
    assert m.add([LabelledInterval(3000, 3100, "S", 0.9)]) == []  # a lone call ...
    m.add([LabelledInterval(5000, 5100, "V", 0.8)])
    assert m.unconfirmed == {"S": 1} and all(s.start >= 4000 for s in m.seen)  # ... ages out unpublished, and is counted
    assert m.take_unconfirmed() == {"S": 1} and not m.unconfirmed  # handed over once
    m.reset()  # the stream ends: the V call at 5000 never got its second window
    assert m.take_unconfirmed() == {"V": 1} and not m.seen
    with pytest.raises(ValueError, match="confirm"):
        IntervalMerger(horizon=1000, confirm=0)
    from stream_ecg.intervals import IntervalRule

    with pytest.raises(ValueError, match="confirm"):
        IntervalRule(confirm=0)


def test_merger_for_card_takes_the_rules_confirm(tiny_model_dir):
    import dataclasses

    card = load_card(tiny_model_dir)
    assert IntervalMerger.for_card(card).confirm == card.interval_rule.confirm == 1
    m = IntervalMerger.for_card(dataclasses.replace(card, interval_rule=dataclasses.replace(card.interval_rule, confirm=3)))
    assert m.confirm == 3 and m.horizon == 2 * card.window


def test_single_alarm_window_labels_its_intervals_without_a_rerun(tiny_model_dir):
    card = load_card(tiny_model_dir)
    x = np.random.default_rng(0).normal(size=(2, 1, 2000)).astype(np.float32)
    att = np.zeros((2, 2000), np.float32)
    att[0, 300:400] = 1.0
    att[0, 1200:1300] = 0.6
    att[1, 500:600] = 1.0
    probs = np.array([[0.1, 0.2, 0.9], [0.9, 0.1, 0.1]], np.float32)  # window 0 alarms for V only, window 1 not

    def infer(batch):
        raise AssertionError("no re-run needed when one class alarms")

    out = label_intervals(card, infer, x, probs, att)
    assert [(iv.start, iv.end, iv.label) for iv in out[0]] == [(300, 400, "V"), (1200, 1300, "V")]
    assert [iv.score for iv in out[0]] == [pytest.approx(0.9), pytest.approx(0.9 * 0.6)]
    assert out[1] == []


def test_two_class_alarm_attributes_each_interval_by_removing_it(tiny_model_dir):
    card = load_card(tiny_model_dir)
    x = np.random.default_rng(0).normal(size=(1, 1, 2000)).astype(np.float32)
    att = np.zeros((1, 2000), np.float32)
    att[0, 300:400] = 1.0
    att[0, 1200:1300] = 1.0
    probs = np.array([[0.1, 0.8, 0.9]], np.float32)  # alarms for S and V
    seen = []

    def infer(batch):
        seen.append(batch.copy())
        # without candidate 0 the S probability collapses; without candidate 1 the V one does
        return np.array([[0.5, 0.05, 0.9], [0.5, 0.8, 0.1]], np.float32), np.zeros((len(batch), 2000), np.float32)

    out = label_intervals(card, infer, x, probs, att)
    assert [(iv.start, iv.end, iv.label) for iv in out[0]] == [(300, 400, "S"), (1200, 1300, "V")]
    removed = seen[0]
    assert removed.shape == (2, 1, 2000)
    assert np.all(removed[0, :, 282:418] == 0)
    np.testing.assert_array_equal(removed[0, :, 418:], x[0, :, 418:])
    np.testing.assert_array_equal(removed[1, :, :1182], x[0, :, :1182])


def test_weak_attention_bumps_are_not_published(tiny_model_dir):
    import dataclasses

    from stream_ecg.intervals import IntervalRule

    card = dataclasses.replace(load_card(tiny_model_dir), interval_rule=IntervalRule(min_score=0.8))
    att = np.zeros((1, 2000), np.float32)
    att[0, 300:400] = 1.0
    att[0, 1200:1300] = 0.6
    out = label_intervals(card, None, np.zeros((1, 1, 2000), np.float32), np.array([[0.1, 0.2, 0.9]], np.float32), att)
    assert [(iv.start, iv.label) for iv in out[0]] == [(300, "V")]


def test_keep_drop_publishes_only_the_candidates_the_class_rests_on(tiny_model_dir):
    import dataclasses

    from stream_ecg.intervals import IntervalRule

    card = dataclasses.replace(load_card(tiny_model_dir), interval_rule=IntervalRule(keep_drop=0.5))
    x = np.random.default_rng(0).normal(size=(1, 1, 2000)).astype(np.float32)
    att = np.zeros((1, 2000), np.float32)
    for s in (300, 900, 1500):
        att[0, s : s + 100] = 1.0
    probs = np.array([[0.05, 0.01, 0.999]], np.float32)  # V alarm, saturated: two PVCs and a normal beat lit

    def infer(batch):
        # removing either PVC leaves the other (probability still ~1, logit falls by ~2-2.5); removing the normal beat: nothing
        assert batch.shape[0] == 3
        return np.array([[0.1, 0.01, 0.99], [0.1, 0.01, 0.999], [0.1, 0.01, 0.98]], np.float32), np.zeros((3, 2000), np.float32)

    out = label_intervals(card, infer, x, probs, att)
    assert [(iv.start, iv.label) for iv in out[0]] == [(300, "V"), (1500, "V")]
    att1 = np.zeros((1, 2000), np.float32)
    att1[0, 300:400] = 1.0
    single = label_intervals(card, None, x, probs, att1)  # one candidate: nothing to compare, no re-run
    assert [(iv.start, iv.label) for iv in single[0]] == [(300, "V")]


def test_window_targets_with_margin():
    starts = np.array([0, 1000])
    beats, cls = np.array([50, 1500]), np.array(["V", "V"])
    assert window_targets(starts, 1000, beats, cls, "V").tolist() == [True, True]
    assert window_targets(starts, 1000, beats, cls, "V", margin=72).tolist() == [False, True]  # 50 is in the margin
    assert window_targets(np.array([500]), 1000, beats, cls, "V", margin=72).tolist() == [False]
    assert window_targets(starts, 1000, beats, cls, "N").tolist() == [False, False]


def test_beat_counts_miss_false_alarm_and_the_150ms_edge():
    beats = np.array([1000, 2000, 3000, 4000])
    cls = np.array(["V", "V", "N", "V"])
    intervals = [
        LabelledInterval(980, 1020, "V", 0.9),  # finds beat 1000
        LabelledInterval(2000 + TOL, 2100, "V", 0.9),  # starts exactly 150 ms after beat 2000: still a match
        LabelledInterval(2990, 3010, "V", 0.9),  # false alarm on a normal beat
        LabelledInterval(3900, 3950, "S", 0.9),  # wrong class: does not find beat 4000
    ]
    c = beat_counts(beats, cls, intervals, "V", TOL)
    assert (c.beats_found, c.beats, c.intervals_confirmed, c.intervals) == (2, 3, 2, 3)
    late = beat_counts(beats, cls, [LabelledInterval(2000 + TOL + 1, 2100, "V", 0.9)], "V", TOL)
    assert late.beats_found == 0 and late.intervals_confirmed == 0
    assert c.summary()["se"] == pytest.approx(2 / 3) and c.summary()["ppv"] == pytest.approx(2 / 3)


def test_beat_counts_leave_out_what_ec57_does_not_count():
    """bxb's VEB +P leaves V calls on fusion (F) and unclassifiable (Q) beats out; its SVEB +P counts an S call on
    an F beat as false. An interval that also lit a normal beat stays false."""
    beats = np.array([1000, 2000, 3000, 3100, 4000, 5000])
    cls = np.array(["V", "F", "F", "N", "Q", "N"])
    v = [LabelledInterval(980, 1020, "V", 0.9),  # confirmed
         LabelledInterval(1990, 2010, "V", 0.9),  # on an F beat only: not counted
         LabelledInterval(3000, 3100, "V", 0.9),  # F and N: false
         LabelledInterval(3990, 4010, "V", 0.9),  # Q only: not counted
         LabelledInterval(4500, 4510, "V", 0.9)]  # no beat at all: false
    c = beat_counts(beats, cls, v, "V", TOL).summary()
    assert (c["intervals"], c["ec57_excluded"]) == (5, 2)
    assert c["ppv"] == pytest.approx(1 / 5) and c["ppv_ec57"] == pytest.approx(1 / 3)
    s = beat_counts(beats, cls, [LabelledInterval(1990, 2010, "S", 0.9), LabelledInterval(3990, 4010, "S", 0.9)], "S", TOL)
    assert (s.intervals_excluded, s.summary()["ppv_ec57"]) == (1, 0.0)  # S on F is false, S on Q not counted
    late = beat_counts(beats, cls, v, "V", TOL, start=3500).summary()  # scoring from `start`: the Q interval only
    assert (late["intervals"], late["ec57_excluded"]) == (2, 1)
    assert (BeatCounts(1, 1, 1, 3, 1) + BeatCounts(0, 1, 0, 1, 1)).summary()["ppv_ec57"] == pytest.approx(1 / 2)


def test_detection_delay_counts_from_the_first_window_that_covered_the_beat():
    beats = np.array([1000, 2000, 3000])
    cls = np.array(["V", "V", "V"])
    window = 500
    intervals = [
        LabelledInterval(1800, 1900, "V", 0.9),  # window 1500 lights a normal neighbour, not beat 2000
        LabelledInterval(980, 1020, "V", 0.9),  # beat 1000, first covered by the window starting at 600
        LabelledInterval(1990, 2030, "V", 0.9),  # beat 2000, covered only one window later (1700)
        LabelledInterval(2000, 2040, "V", 0.9),  # ... and again by a later window: the first one counts
        LabelledInterval(2995, 3005, "S", 0.9),  # beat 3000 is never covered by its class: left out
    ]
    first_seen = np.array([1500, 600, 1700, 1900, 2600])
    d = detection_delays(beats, cls, intervals, first_seen, "V", TOL, window)
    assert d.tolist() == [600 + window - 1000, 1700 + window - 2000]
    assert detection_delays(beats, cls, intervals, first_seen, "N", TOL, window).size == 0
    s = distribution(np.array([1.0, 2.0, np.nan]))
    assert (s["n"], s["max"], s["p50"]) == (2, 2.0, 1.5)
    assert distribution(np.zeros(0))["p95"] is None


def test_first_window_outcome_says_whether_a_late_beat_lacked_the_alarm_or_the_interval():
    starts, window, margin = np.arange(0, 1001, 100), 500, 50
    alarms = np.zeros(len(starts), bool)
    alarms[2] = True  # the window at 200, first to hold beat 600 away from its edges
    intervals = [
        LabelledInterval(590, 610, "V", 0.9),  # beat 600, lit already by the window at 100 (in its margin)
        LabelledInterval(1395, 1405, "V", 0.9),  # beat 1400, lit only after its first core window (1000)
        LabelledInterval(1390, 1410, "S", 0.9),  # ... and earlier, but with the wrong class
    ]
    first_seen = np.array([100, 1100, 900])
    beats = np.array([20, 600, 1400])  # 20 is never away from an edge: not counted
    out = first_window_outcome(starts, window, alarms, beats, np.array(["V"] * 3), intervals, first_seen, "V", TOL, margin)
    assert out == {"beats": 2, "alarmed": 1, "lit": 1}


def test_detection_metrics():
    m = detection_metrics(np.array([1, 1, 0, 0], bool), np.array([0.9, 0.2, 0.8, 0.1]), 0.5)
    assert (m["se"], m["precision"], m["auc"]) == (0.5, 0.5, 0.75)


def test_unconfirmed_intervals_split_false_alarms_from_wrongly_lit_beats():
    window = 1000
    beats = np.array([1000, 1300, 2000, 5000, 5300])
    cls = np.array(["N", "V", "N", "N", "N"])
    intervals = [
        LabelledInterval(1290, 1310, "V", 0.9),  # the V beat: confirmed
        LabelledInterval(990, 1010, "V", 0.9),  # its normal neighbour, in a window that holds the V beat
        LabelledInterval(1500, 1540, "V", 0.9),  # between beats, in that window
        LabelledInterval(4990, 5010, "V", 0.9),  # a window with no V beat in view: false alarm
        LabelledInterval(1295, 1305, "S", 0.9),  # another class: not scored for V
    ]
    first_seen = np.array([800, 800, 900, 4500, 800])
    out = unconfirmed_intervals(beats, cls, intervals, first_seen, "V", TOL, window)
    assert {k: out[k] for k in ("intervals", "unconfirmed", "false_alarm", "other_beat", "no_beat")} == {
        "intervals": 4, "unconfirmed": 3, "false_alarm": 1, "other_beat": 1, "no_beat": 1}
    # how far each wrongly lit interval (+-TOL) lies from the V beat: the neighbour 1300 - (1010 + TOL - 1),
    # the interval between beats (1500 - TOL) - 1300
    assert out["gap_samples"].tolist() == [1300 - (1010 + TOL - 1), 1500 - TOL - 1300]


def test_snap_publishes_the_beats_the_window_lit(tiny_model_dir):
    import dataclasses

    from stream_ecg.intervals import IntervalRule
    from stream_ecg.rhythm import r_peaks

    card = dataclasses.replace(load_card(tiny_model_dir), interval_rule=IntervalRule(snap=72))
    x = np.zeros((1, 1, 2000), np.float32)
    for r in (200, 600, 1000, 1400, 1800):  # narrow spikes as QRS complexes, 400 samples apart
        x[0, 0, r - 5 : r + 6] = np.hanning(11)
    assert r_peaks(x[0, 0], card.fs).tolist() == [200, 600, 1000, 1400, 1800]
    att = np.zeros((1, 2000), np.float32)
    att[0, 640:760] = 1.0  # on the T wave of the beat at 600
    att[0, 1200:1260] = 0.7  # between beats, 140 samples from the nearest: not a beat
    out = label_intervals(card, None, x, np.array([[0.1, 0.2, 0.9]], np.float32), att)
    assert [(iv.start, iv.end, iv.label) for iv in out[0]] == [(564, 636, "V")]



def _premature_card(rule: dict, rhythm: bool = True, residual: bool = False):
    """A one-lead card (from its JSON form, so it is validated) whose interval rule takes `rule`."""
    from stream_ecg.card import ModelCard
    from stream_ecg.dsp import DspConfig
    from stream_ecg.intervals import IntervalRule

    return ModelCard.from_dict({
        "name": "t", "version": "0", "fs": 360.0, "leads": ["MLII"], "lead_aliases": {"MLII": ["MLII"]},
        "window": 2000, "hop": 360, "classes": ["normal", "S", "V"], "abnormal": ["S", "V"],
        "thresholds": {"S": 0.5, "V": 0.5}, "dsp": DspConfig(rhythm=rhythm, beat_residual=residual).to_dict(), "files": {},
        "interval_rule": IntervalRule(**rule).to_dict()})


def _spike_window(beats: list[int]) -> np.ndarray:
    """One lead of narrow spikes as QRS complexes at `beats`, and its rr_prev / rr_next channels as the DSP paints them."""
    from stream_ecg.rhythm import r_peaks, rr_channels

    x = np.zeros((1, 3, 2000), np.float32)
    for r in beats:
        x[0, 0, r - 5 : r + 6] = np.hanning(11)
    assert r_peaks(x[0, 0], 360.0).tolist() == beats
    x[0, 1:] = rr_channels(x[0, 0], 360.0)
    return x


def _premature_window() -> np.ndarray:
    """Two beats 25 % early (800, 1900: RR 300 against a median of 400) in a steady rhythm."""
    return _spike_window([100, 500, 800, 1200, 1600, 1900])


def test_premature_moves_s_intervals_onto_early_beats_and_drops_the_rest():
    card, x = _premature_card({"premature": 0.1}), _premature_window()
    att = np.zeros((1, 2000), np.float32)
    att[0, 840:930] = 1.0  # the pause after the early beat at 800: 40 samples from it
    att[0, 480:560] = 0.8  # on the normal beat at 500, no early beat within 200 ms
    out = label_intervals(card, None, x, np.array([[0.1, 0.9, 0.1]], np.float32), att)
    assert [(iv.start, iv.end, iv.label) for iv in out[0]] == [(764, 836, "S")]
    assert out[0][0].score == pytest.approx(0.9)  # the attention interval's own score moves with it


def test_premature_all_publishes_early_beats_outside_the_v_intervals():
    x = _premature_window()
    att = np.zeros((1, 2000), np.float32)
    att[0, 760:840] = 1.0  # on the early beat at 800, which the model gives to V
    att[0, 1500:1560] = 1.0  # between beats, which it gives to S
    probs = np.array([[0.1, 0.9, 0.9]], np.float32)

    def infer(batch):  # without candidate 0 the V probability collapses; without candidate 1 the S one does
        return np.array([[0.5, 0.9, 0.1], [0.5, 0.05, 0.9]], np.float32), np.zeros((len(batch), 2000), np.float32)

    out = label_intervals(_premature_card({"premature": 0.1, "premature_all": True}), infer, x, probs, att)
    assert [(iv.start, iv.end, iv.label) for iv in out[0]] == [(760, 840, "V"), (1864, 1936, "S")]
    out = label_intervals(_premature_card({"premature": 0.1}), infer, x, probs, att)  # as a gate: no early beat near
    assert [(iv.start, iv.end, iv.label) for iv in out[0]] == [(760, 840, "V")]


def test_premature_attention_marks_only_early_beats_the_attention_map_lights():
    x = _premature_window()  # early beats at 800 and 1900
    att = np.zeros((1, 2000), np.float32)
    att[0, 700:900] = 1.0  # the map lights the early beat at 800
    att[0, 1850:1950] = 0.2  # and barely the one at 1900
    probs = np.array([[0.1, 0.9, 0.1]], np.float32)

    def marked(rule):
        return [(iv.start, iv.end) for iv in label_intervals(_premature_card(rule), None, x, probs, att)[0]]

    assert marked({"premature": 0.1, "premature_all": True}) == [(764, 836), (1864, 1936)]
    assert marked({"premature": 0.1, "premature_all": True, "premature_attention": 0.2}) == [(764, 836), (1864, 1936)]
    assert marked({"premature": 0.1, "premature_all": True, "premature_attention": 0.25}) == [(764, 836)]
    with pytest.raises(ValueError, match="premature_attention"):
        _premature_card({"premature": 0.1, "premature_attention": 0.25})  # only premature_all marks every early beat


def test_premature_usual_marks_only_early_beats_shaped_like_the_median_beat():
    from stream_ecg.card import CardError

    x = np.concatenate([_premature_window(), np.full((1, 1, 2000), 0.05, np.float32)], axis=1)  # + a residual channel
    x[0, 3, 1900 - 36 : 1900 + 37] = 1.0  # the early beat at 1900 differs from the window's median beat (an early PVC)
    att = np.zeros((1, 2000), np.float32)
    att[0, 1500:1560] = 1.0
    probs = np.array([[0.1, 0.9, 0.1]], np.float32)

    def marked(rule):
        return [(iv.start, iv.end, iv.label) for iv in label_intervals(_premature_card(rule, residual=True), None, x, probs, att)[0]]

    assert marked({"premature": 0.1, "premature_all": True}) == [(764, 836, "S"), (1864, 1936, "S")]
    assert marked({"premature": 0.1, "premature_all": True, "premature_usual": 0.6}) == [(764, 836, "S")]
    x[0, 3] = 0.0  # no median beat (too few whole beats): nothing to judge by, the marks stay
    assert marked({"premature": 0.1, "premature_all": True, "premature_usual": 0.6}) == [(764, 836, "S"), (1864, 1936, "S")]
    with pytest.raises(CardError, match="premature_usual"):
        _premature_card({"premature": 0.1, "premature_all": True, "premature_usual": 0.6})  # no residual channel
    with pytest.raises(CardError, match="premature_usual"):
        _premature_card({"premature_usual": 0.6}, residual=True)  # no early beats to judge


def test_premature_usual_moves_s_intervals_only_onto_usual_early_beats():
    x = np.concatenate([_premature_window(), np.full((1, 1, 2000), 0.05, np.float32)], axis=1)  # + a residual channel
    x[0, 3, 800 - 36 : 800 + 37] = 1.0  # the early beat at 800 is unlike the window's median beat
    att = np.zeros((1, 2000), np.float32)
    att[0, 840:930] = 1.0  # the pause after the early beat at 800, within reach of it only
    att[0, 1850:1890] = 0.8  # near the early beat at 1900, which is shaped like the others
    probs = np.array([[0.1, 0.9, 0.1]], np.float32)

    def moved(rule):
        return [(iv.start, iv.end) for iv in label_intervals(_premature_card(rule, residual=True), None, x, probs, att)[0]]

    assert moved({"premature": 0.1}) == [(764, 836), (1864, 1936)]
    assert moved({"premature": 0.1, "premature_usual": 0.6}) == [(1864, 1936)]  # the one near 800 has no beat to go to


def test_shape_split_gives_an_s_call_on_an_unusual_beat_to_v():
    from stream_ecg.card import CardError

    x = np.concatenate([_premature_window(), np.full((1, 1, 2000), 0.05, np.float32)], axis=1)  # + a residual channel
    x[0, 3, 800 - 36 : 800 + 37] = 1.0  # the early beat at 800 is a PVC: unlike the window's median beat
    att = np.zeros((1, 2000), np.float32)
    att[0, 780:830] = 1.0  # on the PVC
    att[0, 1880:1920] = 1.0  # on the early beat at 1900, shaped like the others
    probs = np.array([[0.1, 0.9, 0.9]], np.float32)

    def infer(batch):  # removing either candidate lowers S most: the occlusion calls both S
        return np.array([[0.5, 0.05, 0.85], [0.5, 0.05, 0.85]], np.float32), np.zeros((len(batch), 2000), np.float32)

    rule = {"premature": 0.1, "premature_all": True, "premature_usual": 0.6}

    def marked(extra):
        card = _premature_card({**rule, **extra}, residual=True)
        return [(iv.start, iv.end, iv.label) for iv in label_intervals(card, infer, x, probs, att)[0]]

    assert marked({}) == [(1864, 1936, "S")]  # the PVC's call went to S and was dropped: V lost it
    assert marked({"shape_split": True}) == [(780, 830, "V"), (1864, 1936, "S")]
    with pytest.raises(CardError, match="shape_split"):
        _premature_card({"premature": 0.1, "premature_all": True, "shape_split": True}, residual=True)


def test_premature_needs_the_rhythm_channels():
    from stream_ecg.card import CardError

    with pytest.raises(CardError, match="premature"):
        _premature_card({"premature": 0.1}, rhythm=False)


def test_distinct_keeps_v_intervals_only_on_beats_unlike_the_median_beat():
    x = np.concatenate([_premature_window(), np.full((1, 1, 2000), 0.05, np.float32)], axis=1)  # + a residual channel
    x[0, 3, 1200 - 36 : 1200 + 37] = 1.0  # only the beat at 1200 differs from the window's median beat
    att = np.zeros((1, 2000), np.float32)
    att[0, 1180:1240] = 1.0  # on the distinct beat
    att[0, 480:540] = 1.0  # on a beat like the others
    att[0, 780:830] = 1.0  # on the early beat at 800, shaped like the others
    probs = np.array([[0.1, 0.1, 0.9]], np.float32)

    def lit(rule):
        return [(iv.start, iv.end) for iv in label_intervals(_premature_card(rule, residual=True), None, x, probs, att)[0]]

    assert lit({}) == [(480, 540), (780, 830), (1180, 1240)]
    assert lit({"distinct": 0.5}) == [(1180, 1240)]
    assert lit({"distinct": 0.5, "distinct_early": True}) == [(780, 830), (1180, 1240)]
    x[0, 3] = 0.0  # no median beat (too few whole beats): nothing can be judged, so nothing is dropped
    assert lit({"distinct": 0.5}) == [(480, 540), (780, 830), (1180, 1240)]


def test_distinct_needs_the_residual_channel():
    from stream_ecg.card import CardError

    with pytest.raises(CardError, match="distinct"):
        _premature_card({"distinct": 0.5})


def _irregular_window() -> np.ndarray:
    """Every RR differs (240 to 330 samples, as in atrial fibrillation)."""
    return _spike_window([15, 255, 555, 815, 1145, 1395, 1705, 1985])


def test_rr_irregularity_sets_early_beats_aside_and_reads_the_rest():
    from stream_ecg.intervals import rr_irregularity
    from stream_ecg.rhythm import r_peaks

    steady = _premature_window()[0]  # two early beats and their pauses in a steady rhythm
    assert rr_irregularity(steady[1][r_peaks(steady[0], 360.0)]) == 0.0
    irregular = _irregular_window()[0]  # leaves out 240, 300 and 250, 310: the CV of 260, 330, 280
    assert rr_irregularity(irregular[1][r_peaks(irregular[0], 360.0)]) == pytest.approx(np.std([260, 330, 280]) / 290, rel=1e-3)
    assert rr_irregularity(np.array([0.0, -0.3, 0.2])) == 0.0  # too few RRs to judge


def _s_and_v_labeller(s_span: tuple[int, int], v_span: tuple[int, int]):
    """lit(rule, x): the intervals of a window alarming S and V, attention on `s_span` (an early beat) and `v_span`."""
    att = np.zeros((1, 2000), np.float32)
    att[0, s_span[0] : s_span[1]] = 1.0
    att[0, v_span[0] : v_span[1]] = 0.9
    probs = np.array([[0.05, 0.9, 0.9]], np.float32)

    def infer(batch):  # without candidate 0 the S probability collapses; without candidate 1 the V one does
        return np.array([[0.5, 0.05, 0.9], [0.5, 0.9, 0.1]], np.float32), np.zeros((len(batch), 2000), np.float32)

    def lit(rule, x):
        return [(iv.start, iv.end, iv.label) for iv in label_intervals(_premature_card(rule), infer, x, probs, att)[0]]

    return lit


def test_regular_publishes_s_intervals_only_in_regular_windows():
    lit = _s_and_v_labeller((230, 280), (1120, 1170))  # on the early beat at 255, and the beat at 1145 the model gives to V
    x = _irregular_window()
    assert lit({"premature": 0.1, "regular": 0.12}, x) == [(219, 291, "S"), (1120, 1170, "V")]
    assert lit({"premature": 0.1, "regular": 0.08}, x) == [(1120, 1170, "V")]  # irregular: the S interval goes, V stays
    steady = np.zeros((1, 2000), np.float32)
    steady[0, 780:830] = 1.0  # on the early beat at 800 of a steady rhythm: it stays
    out = label_intervals(_premature_card({"premature": 0.1, "regular": 0.08}), None, _premature_window(),
                          np.array([[0.1, 0.9, 0.1]], np.float32), steady)
    assert [(iv.start, iv.end, iv.label) for iv in out[0]] == [(764, 836, "S")]


def test_left_edge_drops_intervals_centred_in_the_windows_oldest_samples(tiny_model_dir):
    import dataclasses

    card = load_card(tiny_model_dir)
    x = np.random.default_rng(0).normal(size=(1, 1, 2000)).astype(np.float32)
    att = np.zeros((1, 2000), np.float32)
    att[0, 300:400] = 1.0  # centre 350
    att[0, 1200:1300] = 1.0
    probs = np.array([[0.1, 0.2, 0.9]], np.float32)  # V alone: no re-run

    def lit(edge: int) -> list[tuple[int, int]]:
        c = dataclasses.replace(card, interval_rule=dataclasses.replace(card.interval_rule, left_edge=edge))
        return [(iv.start, iv.end) for iv in label_intervals(c, None, x, probs, att)[0]]

    assert lit(0) == lit(350) == [(300, 400), (1200, 1300)]  # a centre at the edge itself stays
    assert lit(351) == [(1200, 1300)]
    from stream_ecg.intervals import IntervalRule

    with pytest.raises(ValueError, match="left_edge"):
        IntervalRule(left_edge=-1)


def test_kurtosis_sqi_tells_ecg_from_noise():
    from stream_ecg.quality import kurtosis_sqi

    ecg = _premature_window()[0, 0]  # narrow QRS spikes on a flat line
    noise = np.random.default_rng(0).normal(size=2000)
    assert kurtosis_sqi(ecg) > 10 and kurtosis_sqi(noise) == pytest.approx(3.0, abs=0.3)
    assert kurtosis_sqi(ecg * 7.0 + 2.0) == pytest.approx(kurtosis_sqi(ecg))  # scale-free: the z-score leaves it alone
    assert np.isnan(kurtosis_sqi(np.zeros(2000))) and np.isnan(kurtosis_sqi(np.full(2000, np.nan)))


def test_min_kurtosis_drops_s_intervals_in_noisy_windows_and_keeps_v():
    lit = _s_and_v_labeller((780, 830), (1180, 1240))  # on the early beat at 800, and the beat at 1200 the model gives to V
    clean = _premature_window()
    noisy = clean.copy()
    noisy[0, 0] += np.random.default_rng(1).normal(0, 0.3, 2000).astype(np.float32)  # same beats, same rhythm channels
    rule = {"premature": 0.1, "min_kurtosis": 5.0}
    assert lit(rule, clean) == [(764, 836, "S"), (1180, 1240, "V")]
    assert lit(rule, noisy) == [(1180, 1240, "V")]
    assert [iv[2] for iv in lit({"premature": 0.1}, noisy)] == ["S", "V"]  # off: the noisy window keeps its S interval
    flat = clean.copy()
    flat[0, 0] = 0.0
    assert [iv[2] for iv in lit(rule, flat)] == ["V"]
    with pytest.raises(ValueError, match="min_kurtosis"):
        _premature_card({"min_kurtosis": -1.0})


def _stream(rr: list[int], fs: float = 360.0) -> tuple[np.ndarray, np.ndarray]:
    """One lead of narrow spikes after the RRs `rr`, cut into the windows (hop 360) a stream emits, as the model eats them."""
    from stream_ecg.dsp import DspConfig, window_input

    beats = np.cumsum([100] + list(rr))
    sig = np.zeros((1, int(beats[-1]) + 100), np.float32)
    for r in beats:
        sig[0, r - 5 : r + 6] = np.hanning(11)
    starts = np.arange(0, sig.shape[1] - 2000 + 1, 360)
    return window_input(np.stack([sig[:, s : s + 2000] for s in starts]), DspConfig(rhythm=True)), starts


def test_stream_irregularity_sees_fibrillation_that_one_window_hides():
    from stream_ecg.intervals import rr_irregularity
    from stream_ecg.postprocess import new_recent, stream_irregularity
    from stream_ecg.rhythm import r_peaks

    card = _premature_card({"premature": 0.1, "regular_stream": 0.1})
    rng = np.random.default_rng(3)
    fibrillating = [int(v) for v in rng.uniform(150, 450, 100)]  # ~50 s, every RR differs
    x, starts = _stream(fibrillating + [300] * 7)  # then a last window of seven equal RRs
    irr = stream_irregularity(card, x, starts, new_recent(card))
    assert rr_irregularity(x[-1, 1][r_peaks(x[-1, 0], 360.0)]) == 0.0  # the last window alone looks regular...
    assert irr[-1] > 0.12  # ...the stream's last 30 s do not
    steady = ([300] * 8 + [210, 390]) * 10  # a premature beat and its pause every ten beats
    x, starts = _stream(steady)
    irr = stream_irregularity(card, x, starts, new_recent(card))
    assert np.median(irr) < 0.01 and np.max(irr) < 0.06  # (a pause whose early beat has just left the 30 s counts)


def test_regular_stream_drops_the_s_intervals_of_irregular_streams_only():
    att = np.zeros((1, 2000), np.float32)
    att[0, 780:830] = 1.0  # on the early beat at 800
    probs = np.array([[0.1, 0.9, 0.1]], np.float32)
    card, x = _premature_card({"premature": 0.1, "regular_stream": 0.1}), _premature_window()

    def lit(irregular):
        return [(iv.start, iv.end, iv.label) for iv in label_intervals(card, None, x, probs, att, irregular=irregular)[0]]

    assert lit(np.array([0.05])) == [(764, 836, "S")]
    assert lit(np.array([0.2])) == []
    with pytest.raises(ValueError, match="stream irregularity"):
        lit(None)
    v_only = label_intervals(card, None, x, np.array([[0.1, 0.1, 0.9]], np.float32), att, irregular=np.array([0.2]))
    assert [(iv.start, iv.end, iv.label) for iv in v_only[0]] == [(780, 830, "V")]
    with pytest.raises(ValueError, match="regular_stream"):
        _premature_card({"regular_stream": -0.1})


def test_regular_needs_the_rhythm_channels():
    from stream_ecg.card import CardError

    with pytest.raises(CardError, match="regular"):
        _premature_card({"regular": 0.1}, rhythm=False)
    with pytest.raises(ValueError, match="regular"):
        _premature_card({"regular": -0.1})


def _run_window() -> np.ndarray:
    """A run of S beats (RR 300 from 500 on) that sets the window's median RR: none of them is early against it."""
    return _spike_window([100, 500, 800, 1100, 1400, 1700])


def test_premature_context_finds_the_run_that_the_windows_median_hides():
    card, x = _premature_card({"premature": 0.1, "premature_context": 10800}), _run_window()
    att = np.zeros((1, 2000), np.float32)
    att[0, 1080:1125] = 1.0  # on the run's beat at 1100
    probs = np.array([[0.1, 0.9, 0.1]], np.float32)

    def lit(ref):
        return [(iv.start, iv.end, iv.label) for iv in label_intervals(card, None, x, probs, att, rr_reference=ref)[0]]

    assert lit(np.array([400.0])) == [(1064, 1136, "S")]  # the stream's rhythm is RR 400: the run came 25 % early
    assert lit(np.array([310.0])) == []  # a stream already at the run's rate: nothing is early
    assert lit(np.array([np.nan])) == []  # too few RRs held yet: the window's own median, as without the option
    assert lit(np.array([np.nan])) == [(iv.start, iv.end, iv.label) for iv in label_intervals(
        _premature_card({"premature": 0.1}), None, x, probs, att)[0]]
    with pytest.raises(ValueError, match="stream RR reference"):
        lit(None)
    with pytest.raises(ValueError, match="premature_centre"):
        _premature_card({"premature": 0.1, "premature_context": 10800, "premature_centre": "mode"})


def test_stream_rr_reference_is_the_recent_rhythm_and_waits_for_enough_beats():
    from stream_ecg.postprocess import new_reference, stream_rr_reference

    card = _premature_card({"premature": 0.1, "premature_context": 10800, "premature_centre": "mean"})
    x, starts = _stream([400] * 30 + [300] * 10)  # 12 s at RR 400, then a 3 s run at RR 300
    ref = stream_rr_reference(card, x, starts, new_reference(card))
    assert np.isnan(ref[0])  # the first window holds under STREAM_REFERENCE_MIN_RR RRs
    steady = ref[np.isfinite(ref)][:5]
    np.testing.assert_allclose(steady, 400.0, atol=2.0)
    assert 300.0 < ref[-1] < 400.0  # the run moves the mean only by its share of the last 30 s
    median = _premature_card({"premature": 0.1, "premature_context": 10800, "premature_centre": "median"})
    assert stream_rr_reference(median, x, starts, new_reference(median))[-1] == pytest.approx(400.0, abs=2.0)
    assert new_reference(_premature_card({"premature": 0.1})) is None
    assert stream_rr_reference(card, x, starts, None) is None


def test_premature_pause_adds_a_slightly_early_beat_followed_by_its_pause():
    from stream_ecg.intervals import IntervalRule, premature_beats

    rr_prev = np.zeros(2000, np.float32)
    peaks = np.array([100, 500, 900, 1260, 1720, 1980])  # 1260: 10 % early, then a pause; 1980: 35 % early, the last
    assert premature_beats(peaks, rr_prev, 0.2, "stream", 400.0)[0].tolist() == [1980]
    early, rel = premature_beats(peaks, rr_prev, 0.2, "stream", 400.0, pause=0.2)
    assert early.tolist() == [1260, 1980]  # 360 <= 0.8 x 460; the last beat, with no RR after, by its RR before alone
    np.testing.assert_allclose(rel, [-0.1, -0.35])
    assert premature_beats(peaks, rr_prev, 0.2, "stream", 400.0, pause=0.2, pause_early=0.15)[0].tolist() == [1980]
    late = np.array([100, 500, 950, 1650])  # 950 comes late, then a long pause: not early for all its pause
    assert premature_beats(late, rr_prev, 0.2, "stream", 400.0, pause=0.2)[0].size == 0
    with pytest.raises(ValueError, match="premature_pause"):
        IntervalRule(premature=0.2, premature_pause=1.0)
    with pytest.raises(ValueError, match="premature_pause_early"):
        IntervalRule(premature=0.2, premature_pause_early=0.1)  # nothing to floor
    from stream_ecg.card import CardError

    with pytest.raises(CardError, match="premature_pause"):
        _premature_card({"premature_pause": 0.2})  # nothing to widen


def test_min_p_consistency_drops_s_marks_only_where_the_p_wave_is_lost():
    rng = np.random.default_rng(2)
    x = _premature_window()
    card = _premature_card({"premature": 0.1, "premature_all": True, "min_p_consistency": 0.5})
    att = np.zeros((1, 2000), np.float32)
    att[0, 1500:1560] = 1.0
    probs = np.array([[0.1, 0.9, 0.1]], np.float32)
    kept = label_intervals(card, None, x, probs, att)[0]
    assert [iv.label for iv in kept] == ["S", "S"]  # spikes alone: a flat stretch before R cannot be judged, kept
    x[0, 0] += 0.02 * rng.standard_normal(2000).astype(np.float32)  # no P wave, only noise before each R
    assert label_intervals(card, None, x, probs, att)[0] == []
    ungated = _premature_card({"premature": 0.1, "premature_all": True})
    assert [iv.label for iv in label_intervals(ungated, None, x, probs, att)[0]] == ["S", "S"]  # the gate dropped them


def test_p_wave_leads_mean_reads_every_lead_it_can_judge():
    from stream_ecg.card import ModelCard
    from stream_ecg.dsp import DspConfig
    from stream_ecg.intervals import IntervalRule
    from stream_ecg.morphology import p_wave_consistency
    from stream_ecg.postprocess import _p_consistency

    def card(leads: str):
        return ModelCard.from_dict({
            "name": "t", "version": "0", "fs": 360.0, "leads": ["MLII", "V1"],
            "lead_aliases": {"MLII": ["MLII"], "V1": ["V1"]}, "window": 2000, "hop": 360,
            "classes": ["normal", "S", "V"], "abnormal": ["S", "V"], "thresholds": {"S": 0.5, "V": 0.5},
            "dsp": DspConfig(rhythm=True).to_dict(), "files": {},
            "interval_rule": IntervalRule(min_p_consistency=0.5, p_wave_leads=leads).to_dict()})

    rng = np.random.default_rng(2)
    x = np.zeros((4, 2000), np.float32)
    x[0] = _premature_window()[0, 0] + 0.02 * rng.standard_normal(2000).astype(np.float32)  # no P wave on MLII
    peaks = np.array([100, 500, 800, 1200, 1600, 1900])
    for r in peaks:  # one clear P wave 150 ms before each R on V1
        x[1, r - 5 : r + 6] = np.hanning(11)
        x[1, r - 62 : r - 46] += 0.3 * np.hanning(16).astype(np.float32)
    first, chest = p_wave_consistency(x[0], 360.0, peaks), p_wave_consistency(x[1], 360.0, peaks)
    assert first < 0.5 < chest
    assert _p_consistency(card("first"), x, peaks) == pytest.approx(first)
    assert _p_consistency(card("mean"), x, peaks) == pytest.approx((first + chest) / 2)
    x[1] = 0.0  # a flat lead cannot be judged: the mean is the other lead's
    assert _p_consistency(card("mean"), x, peaks) == pytest.approx(first)
    with pytest.raises(ValueError, match="p_wave_leads"):
        IntervalRule(p_wave_leads="max")


def test_located_alarms_are_scored_against_the_windows_holding_the_class():
    from stream_ecg.scoring import located_metrics

    truth = np.array([True, True, True, False, False])
    m = located_metrics(truth, np.array([True, False, False, True, False]))
    assert (m["se"], m["precision"], m["windows"]) == (pytest.approx(1 / 3), 0.5, 2)
    none = located_metrics(truth, np.zeros(5, bool))
    assert none["se"] == 0.0 and np.isnan(none["precision"]) and none["windows"] == 0
