"""Rhythm context: R peaks found where annotated, premature beats marked, same channels either path."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ecg.card import CardError, ModelCard
from stream_ecg.data import load_record
from stream_ecg.data.locate import excerpt_dir
from stream_ecg.dsp import DspConfig, DspError, normalise_window, preprocess, window_input
from stream_ecg.rhythm import RRHistory, r_peaks, rr_channels

FS = 360.0


def _beats(peaks: list[int], n: int = 2000, width: int = 12, amp: float = 1.0) -> np.ndarray:
    """Narrow Gaussian 'QRS' spikes at the given samples, plus a little noise."""
    t = np.arange(n)
    x = sum(amp * np.exp(-0.5 * ((t - p) / (width / 3)) ** 2) for p in peaks)
    return (x + np.random.default_rng(0).normal(0, 0.01, n)).astype(np.float32)


def test_r_peaks_finds_regular_beats():
    peaks = list(range(100, 2000, 290))
    found = r_peaks(_beats(peaks), FS)
    assert len(found) == len(peaks)
    assert np.max(np.abs(found - np.array(peaks))) <= 2


def test_r_peaks_snaps_to_the_extreme_whatever_the_polarity_and_at_the_edges():
    t = np.arange(2000)
    x = np.zeros(2000)
    for p, amp in ((8, 1.0), (600, -1.2), (1200, 1.1), (1993, -0.9)):  # two within the search span of an edge
        x += amp * np.exp(-0.5 * ((t - p) / 4.0) ** 2)
    x += 0.3 * np.exp(-0.5 * ((t - 640) / 15.0) ** 2)  # a T wave after the inverted beat
    assert r_peaks(x.astype(np.float32), FS).tolist() == [8, 600, 1200, 1993]


def test_r_peaks_on_real_record_matches_annotations():
    rec = load_record("100", excerpt_dir())
    sig = preprocess(rec.signal[:1], rec.fs, DspConfig())[0]
    found = r_peaks(sig[: 60 * 360], FS)
    ann = rec.beats.samples[(rec.beats.samples > 20) & (rec.beats.samples < 60 * 360 - 20)]
    hit = np.min(np.abs(ann[:, None] - found[None, :]), axis=1) <= 54  # 150 ms, as EC57 matching
    assert hit.mean() > 0.99
    assert len(found) <= len(ann) + 2


def _peak_errors(name: str, detector: str) -> tuple[int, int]:
    """(extra, missed) R peaks against the annotations of a bundled excerpt, window by window as the runtime cuts them."""
    rec = load_record(name, excerpt_dir())
    sig = preprocess(rec.signal[:1], rec.fs, DspConfig())[0]
    ann, extra, missed = rec.beats.samples, 0, 0
    for a in range(0, len(sig) - 2000, 2000):
        found = r_peaks(normalise_window(sig[None, a : a + 2000], 1e-3)[0], FS, detector) + a
        found, beats = found[(found >= a + 30) & (found < a + 1970)], ann[(ann >= a + 30) & (ann < a + 1970)]
        extra += sum(len(beats) == 0 or np.min(np.abs(beats - p)) > 54 for p in found)
        missed += sum(len(found) == 0 or np.min(np.abs(found - b)) > 54 for b in beats)
    return extra, missed


def test_energy_t_leaves_the_t_and_p_waves_that_energy_takes_for_beats():
    """232 (sinus bradycardia, long pauses): the first detector puts peaks on T and P waves, energy_t hardly does,
    and misses no more beats there or in 208 (multiform PVCs, wide beats of very different energy) or 100."""
    assert _peak_errors("232", "energy")[0] >= 10
    for name in ("232", "208", "100"):
        (extra, missed), (old_extra, old_missed) = _peak_errors(name, "energy_t"), _peak_errors(name, "energy")
        assert extra <= min(old_extra, 3) and missed <= old_missed, name


def test_an_unknown_peak_detector_is_refused_and_old_cards_keep_the_first():
    with pytest.raises(ValueError, match="unknown R-peak detector"):
        r_peaks(_beats([100, 400]), FS, "wavelet")
    with pytest.raises(DspError, match="peak_detector"):
        DspConfig(peak_detector="wavelet")
    old = {k: v for k, v in DspConfig().to_dict().items() if k != "peak_detector"}  # a card written before the field
    assert DspConfig.from_dict(old).peak_detector == "energy"


def test_window_input_paints_the_rhythm_channels_from_the_cards_detector():
    rec = load_record("232", excerpt_dir())
    sig = preprocess(rec.signal[:1], rec.fs, DspConfig())[0]
    w = np.stack([sig[a : a + 2000][None] for a in range(0, 20 * 2000, 2000)])
    for det in ("energy", "energy_t"):
        x = window_input(w, DspConfig(rhythm=True, peak_detector=det))
        z = normalise_window(w, 1e-3)
        expected = np.stack([rr_channels(zi[0], FS, peaks=r_peaks(zi[0], FS, det)) for zi in z])
        np.testing.assert_array_equal(x[:, 1:], expected)
    assert not np.array_equal(window_input(w, DspConfig(rhythm=True)), window_input(w, DspConfig(rhythm=True, peak_detector="energy_t")))


def test_premature_beat_gets_short_rr_before_and_long_after():
    peaks = [100, 400, 700, 1000, 1180, 1600, 1900]  # beat at 1180 is early, then a compensatory pause
    ch = rr_channels(_beats(peaks), FS)
    assert ch.shape == (2, 2000)
    assert ch[0, 1180] < -0.3  # came early
    assert ch[1, 1180] > 0.3  # followed by a pause
    assert abs(ch[0, 700]) < 0.05 and abs(ch[1, 700]) < 0.05  # ordinary beat
    assert ch[0, 10] == 0  # first beat: no RR before it


def test_flat_window_has_zero_rhythm_channels():
    assert not rr_channels(np.zeros(2000, np.float32), FS).any()


def test_window_input_single_and_batched_agree():
    cfg = DspConfig(rhythm=True)
    w = np.stack([_beats([100, 400, 700, 1000, 1180, 1600, 1900])[None], _beats(list(range(50, 2000, 300)))[None]])
    batched = window_input(w, cfg)
    assert batched.shape == (2, 3, 2000)
    for i in range(2):
        np.testing.assert_array_equal(window_input(w[i], cfg), batched[i])
    assert window_input(w, DspConfig()).shape == (2, 1, 2000)


def test_card_refuses_model_without_rhythm_channels():
    d = {
        "name": "x", "version": "1", "fs": 360.0, "leads": ["MLII"], "window": 2000, "hop": 360,
        "classes": ["normal", "S", "V"], "thresholds": {"S": 0.5, "V": 0.5},
        "dsp": DspConfig(rhythm=True).to_dict(), "interval_rule": {}, "files": {},
        "model_config": {"in_leads": 1},
    }
    with pytest.raises(CardError, match="3 input channels"):
        ModelCard.from_dict(d)
    ModelCard.from_dict({**d, "model_config": {"in_leads": 3}})


def _windows(x: np.ndarray, hop: int, window: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(0, len(x) - window + 1, hop)
    return np.stack([x[s : s + window][None] for s in starts]), starts


def test_history_takes_each_beat_once_whatever_the_hop():
    n, rr = 20000, 290
    x = _beats(list(range(100, n, rr)), n=n)
    sizes = []
    for hop in (180, 360, 720):
        history = RRHistory(1000, FS)
        w, starts = _windows(x, hop)
        window_input(w, DspConfig(rhythm=True, rhythm_context=1000), starts, history)
        assert max(abs(v - rr) for v in history.rr) <= 2
        sizes.append(len(history.rr))
    # every interval of the stream up to the last window's guard, once: no double counting of overlaps
    assert max(sizes) - min(sizes) <= 2 and max(sizes) >= (n - 2000) // rr


def test_stream_reference_shows_a_run_of_tachycardia_as_premature():
    # three minutes of regular beats (RR 300), then a 12 s run at RR 200: a window inside the run holds only
    # fast beats, so its own median calls them on time, while the patient's recent median (300) does not
    regular = list(range(100, 180 * 360, 300))
    run = list(range(regular[-1] + 200, regular[-1] + 12 * 360, 200))
    x = _beats(regular + run, n=run[-1] + 100)
    w, starts = _windows(x, 360)
    last = w[-1]
    stream = window_input(w, DspConfig(rhythm=True, rhythm_context=256), starts)[-1]
    alone = window_input(last, DspConfig(rhythm=True))
    inner = [p - int(starts[-1]) for p in run if 300 < p - starts[-1] < 1700]
    assert inner
    for p in inner:
        assert abs(alone[1, p]) < 0.05
        assert stream[1, p] == pytest.approx(200 / 300 - 1, abs=0.03)


def test_stream_reference_needs_window_starts_and_rhythm():
    cfg = DspConfig(rhythm=True, rhythm_context=8)
    with pytest.raises(DspError, match="start"):
        window_input(np.zeros((2, 1, 2000), np.float32), cfg)
    with pytest.raises(DspError, match="rhythm=True"):
        DspConfig(rhythm_context=8)
    with pytest.raises(DspError, match="integer"):
        DspConfig(rhythm=True, rhythm_context=-1)


def test_both_references_give_four_rhythm_channels():
    cfg = DspConfig(rhythm=True, rhythm_context=64, rhythm_both=True)
    assert cfg.channels(1) == 5 and cfg.rhythm_channels[2:] == ("rr_prev_window", "rr_next_window")
    x = _beats(list(range(100, 20000, 290)), n=20000)
    w, starts = _windows(x, 360)
    both = window_input(w, cfg, starts)
    np.testing.assert_array_equal(both[:, 3:], window_input(w, DspConfig(rhythm=True))[:, 1:])
    np.testing.assert_array_equal(both[:, :3], window_input(w, DspConfig(rhythm=True, rhythm_context=64), starts))
    with pytest.raises(DspError, match="rhythm_context"):
        DspConfig(rhythm=True, rhythm_both=True)


def test_recent_rhythm_holds_each_beat_of_the_last_span_once():
    from stream_ecg.rhythm import RecentRhythm

    n, rr, span = 30000, 290, 10800
    x = _beats(list(range(100, n, rr)), n=n)
    for hop in (180, 360, 720):
        recent = RecentRhythm(span, FS)
        w, starts = _windows(x, hop)
        for win, s in zip(w, starts):
            recent.update(r_peaks(win[0], FS), int(s), win.shape[-1])
        ends = np.array([e for e, _ in recent.rr])
        assert np.all(np.diff(ends) > 0) and ends[0] >= starts[-1] + 2000 - span  # once each, none older than the span
        assert abs(len(recent.rr) - span // rr) <= 3 and len(recent.rr) <= recent.capacity
        rel = recent.relative()
        assert rel[0] == 0.0 and np.max(np.abs(rel)) < 0.02
    with pytest.raises(ValueError, match="span"):
        RecentRhythm(0, FS)
