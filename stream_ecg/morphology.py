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


def beat_residual(lead: np.ndarray, fs: float, peaks: np.ndarray) -> np.ndarray:
    """(n,) float32: the lead minus the window's median beat, over each beat's span (zeros elsewhere).

    A beat's span runs from halfway to the previous R peak to halfway to the next, cut to the
    snippet's reach; the median is taken over the beats whose whole snippet lies in the window.
    """
    x = np.asarray(lead, dtype=np.float32).reshape(-1)
    n = x.size
    out = np.zeros(n, dtype=np.float32)
    peaks = np.sort(np.asarray(peaks, dtype=np.int64).reshape(-1))
    pre, post = int(round(PRE_S * fs)), int(round(POST_S * fs))
    whole = peaks[(peaks >= pre) & (peaks + post <= n)]
    if whole.size < MIN_BEATS:
        return out
    template = np.median(x[whole[:, None] + np.arange(-pre, post)[None, :]], axis=0)
    bounds = np.concatenate([[0], (peaks[:-1] + peaks[1:]) // 2, [n]])
    for k, p in enumerate(peaks):
        lo, hi = max(bounds[k], p - pre, 0), min(bounds[k + 1], p + post, n)
        if hi > lo:
            out[lo:hi] = x[lo:hi] - template[lo - p + pre : hi - p + pre]
    return out
