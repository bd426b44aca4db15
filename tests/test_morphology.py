"""Beat residual: a beat unlike its neighbours stands out, the usual beat cancels, every path alike."""

from __future__ import annotations

import numpy as np

from stream_ecg.dsp import DspConfig, window_input
from stream_ecg.morphology import beat_residual, p_wave_consistency
from stream_ecg.rhythm import r_peaks

FS = 360.0
PEAKS = [150, 450, 750, 1050, 1350, 1650]


def _beat(t: np.ndarray, p: int, width: float, amp: float = 1.0) -> np.ndarray:
    return amp * np.exp(-0.5 * ((t - p) / width) ** 2)


def _window(wide_at: int | None = None, n: int = 2000) -> np.ndarray:
    """Narrow beats at PEAKS; the one at `wide_at` is wide and tall (a ventricular-looking beat the R-peak
    detector still finds)."""
    t = np.arange(n, dtype=np.float64)
    x = sum(_beat(t, p, 12.0, 3.0) if p == wide_at else _beat(t, p, 4.0) for p in PEAKS)
    return x.astype(np.float32)


def test_identical_beats_leave_no_residual():
    x = _window()
    res = beat_residual(x, FS, np.array(PEAKS))
    assert res.shape == x.shape and res.dtype == np.float32
    assert np.abs(res).max() < 1e-6


def test_odd_beat_stands_out_and_only_there():
    x = _window(wide_at=1050)
    res = np.abs(beat_residual(x, FS, np.array(PEAKS)))
    odd = res[1050 - 60 : 1050 + 60].max()
    assert odd > 0.3
    for p in (150, 450, 750, 1350, 1650):
        assert res[p - 60 : p + 60].max() < 0.05 * odd


def test_too_few_whole_beats_give_zeros():
    x = _window()
    assert not beat_residual(x, FS, np.array([150, 450])).any()  # two beats: no median beat
    assert not beat_residual(x, FS, np.array([], dtype=np.int64)).any()


def test_beat_cut_by_the_edge_is_painted_against_the_whole_beats():
    t = np.arange(1900, dtype=np.float64)
    peaks = np.array(PEAKS) - 100  # the first beat sits 50 samples in: too close to the edge for the median
    same = sum(_beat(t, p, 4.0) for p in peaks).astype(np.float32)
    assert np.abs(beat_residual(same, FS, peaks)).max() < 1e-6
    wide_first = (same - _beat(t, 50, 4.0) + _beat(t, 50, 12.0)).astype(np.float32)
    res = np.abs(beat_residual(wide_first, FS, peaks))
    assert res[:110].max() > 0.3 and res[200:].max() < 0.02


def test_window_input_appends_residual_after_rhythm():
    w = np.stack([_window(wide_at=1050)[None], _window()[None]])
    plain = window_input(w, DspConfig(rhythm=True))
    both = window_input(w, DspConfig(rhythm=True, beat_residual=True))
    assert both.shape == (2, 4, 2000)
    np.testing.assert_array_equal(both[:, :3], plain)
    z = plain[:, 0]  # the residual is of the z-scored first lead, at the detector's peaks
    for i in range(2):
        np.testing.assert_array_equal(both[i, 3], beat_residual(z[i], FS, r_peaks(z[i], FS)))
        np.testing.assert_array_equal(window_input(w[i], DspConfig(rhythm=True, beat_residual=True)), both[i])
    assert np.abs(both[0, 3]).max() > 3 * np.abs(both[1, 3]).max()
    only = window_input(w, DspConfig(beat_residual=True))
    assert only.shape == (2, 2, 2000)
    np.testing.assert_array_equal(only[:, 1], both[:, 3])


def test_card_counts_the_residual_channel():
    cfg = DspConfig(rhythm=True, beat_residual=True)
    assert cfg.channels(2) == 5
    assert cfg.extra_channels == ("rr_prev", "rr_next", "residual")
    assert DspConfig.from_dict(cfg.to_dict()) == cfg


def _beats_with_p_waves(p_at: list[int] | None, n: int = 2000, rr: int = 400) -> np.ndarray:
    """A first lead with an R spike every rr samples and, where `p_at` gives an offset before R per beat, a P bump."""
    lead = np.zeros(n, np.float32)
    for k, r in enumerate(range(200, n - 100, rr)):
        lead[r - 3 : r + 4] = 10.0
        if p_at is not None:
            lead[r - p_at[k % len(p_at)] - 8 : r - p_at[k % len(p_at)] + 8] += np.hanning(16).astype(np.float32)
    return lead


def test_p_wave_consistency_tells_one_p_wave_from_none():
    rng = np.random.default_rng(0)
    peaks = np.arange(200, 1900, 400)
    sinus = _beats_with_p_waves([55]) + 0.05 * rng.standard_normal(2000).astype(np.float32)
    fib = _beats_with_p_waves(None) + 0.3 * rng.standard_normal(2000).astype(np.float32)  # no P wave: noise before R
    assert p_wave_consistency(sinus, 360.0, peaks) > 0.9
    assert p_wave_consistency(fib, 360.0, peaks) < 0.4
    assert np.isnan(p_wave_consistency(sinus, 360.0, peaks[:2]))  # under 3 whole beats: cannot judge



def test_p_wave_consistencies_is_each_lead_in_one_pass():
    from stream_ecg.morphology import p_wave_consistencies

    rng = np.random.default_rng(3)
    peaks = np.arange(200, 1900, 400)
    leads = np.stack([_beats_with_p_waves([55]), _beats_with_p_waves(None)]) + 0.1 * rng.standard_normal((2, 2000))
    each = [p_wave_consistency(lead, 360.0, peaks) for lead in leads]
    np.testing.assert_allclose(p_wave_consistencies(leads, 360.0, peaks), each, rtol=1e-12)
    assert np.isnan(p_wave_consistencies(leads, 360.0, peaks[:2])).all()
    flat = leads.copy()
    flat[1] = 0.0
    got = p_wave_consistencies(flat, 360.0, peaks)
    assert np.isfinite(got[0]) and np.isnan(got[1])  # a flat lead cannot be judged; the other still is
