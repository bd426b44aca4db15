"""Rhythm context for one window: where the beats are, and how early or late each one came.

Supraventricular ectopy is mostly a timing finding (a premature beat of near-normal shape), which
a small CNN on 5.5 s of z-scored ECG learns poorly across patients. These pure functions find R
peaks inside a window and paint two extra input channels, each beat's preceding and following
RR interval relative to the window's median RR. They are stateless (the window alone decides), so
the trainer and the live runtime compute exactly the same channels from the same window.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.signal

RHYTHM_CHANNELS = ("rr_prev", "rr_next")
_REFRACTORY_S = 0.25  # no two QRS complexes closer than this
_INTEGRATE_S = 0.08  # energy smoothing, about one QRS width
_SEARCH_S = 0.06  # R peak sought within this of the energy peak
_HEIGHT = 0.3  # a peak must reach this share of the window's typical beat energy
_CLIP = (-0.8, 1.5)  # relative RR deviation is clipped to this range


def r_peaks(lead: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of R peaks in one band-passed lead (a Pan-Tompkins-style energy detector)."""
    x = np.asarray(lead, dtype=np.float64)
    if x.size < 3 or not np.isfinite(x).all():
        return np.zeros(0, dtype=np.int64)
    energy = scipy.ndimage.uniform_filter1d(np.gradient(x) ** 2, max(1, int(_INTEGRATE_S * fs)))
    cand, props = scipy.signal.find_peaks(energy, distance=max(1, int(_REFRACTORY_S * fs)), height=0)
    if cand.size == 0:
        return cand.astype(np.int64)
    # typical beat energy: the median of the larger half of the candidates, so a few huge
    # ectopic or artefact peaks do not hide the normal beats, and T waves fall below it
    heights = props["peak_heights"]
    typical = np.median(np.sort(heights)[len(heights) // 2 :])
    peaks = cand[heights >= _HEIGHT * typical]
    # snap to the largest |deviation| nearby, whatever the QRS polarity
    half = max(1, int(_SEARCH_S * fs))
    out = np.empty(peaks.size, dtype=np.int64)
    for k, p in enumerate(peaks):
        lo, hi = max(0, p - half), min(x.size, p + half + 1)
        seg = x[lo:hi] - np.median(x[lo:hi])
        out[k] = lo + int(np.argmax(np.abs(seg)))
    return np.unique(out)


def rr_channels(lead: np.ndarray, fs: float) -> np.ndarray:
    """(2, n) float32: each beat's span holds (RR before / median RR - 1) and (RR after / median RR - 1).

    A beat's span runs from halfway to the previous beat to halfway to the next; where an interval
    is unknown (the first and last beat, a window with under three beats) the channel is 0.
    """
    n = np.asarray(lead).shape[-1]
    out = np.zeros((2, n), dtype=np.float32)
    peaks = r_peaks(lead, fs)
    if peaks.size < 3:
        return out
    rr = np.diff(peaks).astype(np.float64)
    rel = np.clip(rr / np.median(rr) - 1.0, *_CLIP)
    bounds = np.concatenate([[0], (peaks[:-1] + peaks[1:]) // 2, [n]])
    for k in range(peaks.size):
        lo, hi = bounds[k], bounds[k + 1]
        if k > 0:
            out[0, lo:hi] = rel[k - 1]
        if k < peaks.size - 1:
            out[1, lo:hi] = rel[k]
    return out


def add_rhythm(x: np.ndarray, fs: float) -> np.ndarray:
    """(B, leads, n) windows -> (B, leads + 2, n): the rhythm channels of the first lead appended."""
    x = np.asarray(x, dtype=np.float32)
    rhythm = np.stack([rr_channels(w[0], fs) for w in x]) if len(x) else np.zeros((0, 2, x.shape[-1]), np.float32)
    return np.concatenate([x, rhythm], axis=1)
