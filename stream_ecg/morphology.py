"""Beat morphology against the window's usual beat: the residual channel.

A bundle-branch-block patient's every beat is wide, and a network trained on other patients reads
each as ventricular. A cardiologist reads a beat against the patient's other beats; a small CNN
cannot, as its receptive field is shorter than one RR interval. `beat_residual` paints each beat's
difference from the window's median beat (sample by sample, aligned at the R peaks the rhythm
channels use), so "unlike its neighbours" is one input channel away. Stateless: the window alone
decides, so trainer, offline path and live buffer compute it alike.
"""

from __future__ import annotations

import numpy as np

RESIDUAL_CHANNEL = "residual"
PRE_S, POST_S = 0.25, 0.45  # snippet around an R peak: the P wave before it, the T wave after
MIN_BEATS = 3  # whole snippets needed for a median beat; fewer gives a zero channel


def _whole_beats(peaks: np.ndarray, n: int, fs: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(sorted peaks, those whose whole PRE_S/POST_S snippet lies in the n-sample window, pre, post in samples)."""
    peaks = np.sort(np.asarray(peaks, dtype=np.int64).reshape(-1))
    pre, post = int(round(PRE_S * fs)), int(round(POST_S * fs))
    return peaks, peaks[(peaks >= pre) & (peaks + post <= n)], pre, post


def beat_residual(lead: np.ndarray, fs: float, peaks: np.ndarray) -> np.ndarray:
    """(n,) float32: the lead minus the window's median beat, over each beat's span (zeros elsewhere).

    A beat's span runs from halfway to the previous R peak to halfway to the next, cut to the
    snippet's reach; the median is taken over the beats whose whole snippet lies in the window.
    """
    x = np.asarray(lead, dtype=np.float32).reshape(-1)
    n = x.size
    out = np.zeros(n, dtype=np.float32)
    peaks, whole, pre, post = _whole_beats(peaks, n, fs)
    if whole.size < MIN_BEATS:
        return out
    template = np.median(x[whole[:, None] + np.arange(-pre, post)[None, :]], axis=0)
    bounds = np.concatenate([[0], (peaks[:-1] + peaks[1:]) // 2, [n]])
    for k, p in enumerate(peaks):
        lo, hi = max(bounds[k], p - pre, 0), min(bounds[k + 1], p + post, n)
        if hi > lo:
            out[lo:hi] = x[lo:hi] - template[lo - p + pre : hi - p + pre]
    return out


P_FROM_S, P_TO_S = 0.25, 0.08  # the P wave's reach before the R peak: from 250 ms to 80 ms


def p_wave_consistency(lead: np.ndarray, fs: float, peaks: np.ndarray) -> float:
    """How alike the stretch before each R peak where a P wave sits (P_FROM_S to P_TO_S) is across the window's beats:
    the mean correlation of each whole beat's stretch with the median beat's (as `beat_residual` takes the median).
    NaN with fewer than MIN_BEATS whole beats or a flat median stretch (it cannot be judged).

    Why: in atrial fibrillation there is no P wave, and what fills that stretch (fibrillatory waves, a T wave at
    varying RR) differs beat to beat; a sinus rhythm with early beats keeps one P wave in most beats. The S rules'
    timing tests read fibrillation's irregular RRs as early beats. The median is made of the beats it is compared with,
    so with few beats even pure noise correlates with it (about 0.3-0.4 with five beats): levels mean little below
    that."""
    return float(p_wave_consistencies(np.asarray(lead).reshape(1, -1), fs, peaks)[0])


def p_wave_consistencies(leads: np.ndarray, fs: float, peaks: np.ndarray) -> np.ndarray:
    """(n_leads,) `p_wave_consistency` of each lead of one window (n_leads, n), on the same R peaks, in one pass."""
    x = np.asarray(leads, dtype=np.float64)
    out = np.full(x.shape[0], np.nan)
    whole = _whole_beats(peaks, x.shape[-1], fs)[1]
    if whole.size < MIN_BEATS:
        return out
    stretch = np.arange(-int(round(P_FROM_S * fs)), -int(round(P_TO_S * fs)))
    beats = x[:, whole[:, None] + stretch[None, :]]  # (leads, beats, stretch)
    median = np.median(beats, axis=1)
    beats, median = beats - beats.mean(axis=2, keepdims=True), median - median.mean(axis=1, keepdims=True)
    flat = np.linalg.norm(median, axis=1)
    norms = np.linalg.norm(beats, axis=2) * flat[:, None]
    corr = np.einsum("lbs,ls->lb", beats, median) / np.maximum(norms, 1e-12)
    judged = flat > 0
    out[judged] = corr[judged].mean(axis=1)
    return out
