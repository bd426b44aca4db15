"""Rhythm context: R peaks found where annotated, premature beats marked, same channels either path."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ecg.card import CardError, ModelCard
from stream_ecg.data import load_record
from stream_ecg.data.locate import excerpt_dir
from stream_ecg.dsp import DspConfig, preprocess, window_input
from stream_ecg.rhythm import r_peaks, rr_channels

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


def test_r_peaks_on_real_record_matches_annotations():
    rec = load_record("100", excerpt_dir())
    sig = preprocess(rec.signal[:1], rec.fs, DspConfig())[0]
    found = r_peaks(sig[: 60 * 360], FS)
    ann = rec.beats.samples[(rec.beats.samples > 20) & (rec.beats.samples < 60 * 360 - 20)]
    hit = np.min(np.abs(ann[:, None] - found[None, :]), axis=1) <= 54  # 150 ms, as EC57 matching
    assert hit.mean() > 0.99
    assert len(found) <= len(ann) + 2


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
