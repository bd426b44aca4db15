"""Streaming windows over a continuous record: what a bedside monitor's buffer hands the model.

Window labels say which AAMI classes have an R peak inside the window (weak, window-level
supervision). The per-sample mask marks where each annotated beat is and exists only to
score localisation; training on it would defeat the unsupervised segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stream_ecg.data.mitdb import AAMI_CLASSES, Beats

MASK_CODES = {"": 0, "N": 1, "S": 2, "V": 3, "F": 4, "Q": 5}
MASK_HALF_WIDTH_S = 0.3


@dataclass(frozen=True)
class Windows:
    """Window starts, window-level AAMI labels and the evaluation-only per-sample mask."""

    starts: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    window: int
    hop: int

    def __len__(self) -> int:
        return len(self.starts)

    def x(self, signal: np.ndarray) -> np.ndarray:
        """(n, n_leads, window) read-only view of the windows of a (n_leads, n_samples) signal."""
        signal = np.asarray(signal)
        if signal.ndim == 1:
            signal = signal[None, :]
        if len(self.starts) == 0:
            return np.zeros((0, signal.shape[0], self.window), signal.dtype)
        view = sliding_window_view(signal, self.window, axis=-1)
        return view[:, self.starts].transpose(1, 0, 2)


def beat_mask(n_samples: int, beats: Beats, fs: float = 360.0) -> np.ndarray:
    """Per-sample MASK_CODES over a whole record.

    Each beat covers its extent (halfway to its neighbours) clipped to +-0.3 s of its R peak.
    """
    mask = np.zeros(n_samples, np.int8)
    if len(beats) == 0:
        return mask
    starts, ends = beats.extents(n_samples)
    half = int(round(MASK_HALF_WIDTH_S * fs))
    lo = np.maximum(starts, beats.samples - half)
    hi = np.minimum(ends, beats.samples + half + 1)
    for a, b, cls in zip(lo.tolist(), hi.tolist(), beats.aami().tolist()):
        if b > a:
            mask[a:b] = MASK_CODES[cls]
    return mask


def sliding_windows(
    n_samples: int,
    beats: Beats,
    window: int = 2000,
    hop: int = 360,
    edge_margin: int = 0,
    fs: float = 360.0,
) -> Windows:
    """Windows of `window` samples every `hop` samples; 1 + (n_samples - window) // hop of them.

    An R peak counts towards a window's labels only if it lies at least `edge_margin` samples
    inside both edges, so a beat cut in half at the border does not label the window. `fs`
    sets the +-0.3 s mask half-width.
    """
    n = 0 if n_samples < window else 1 + (n_samples - window) // hop
    starts = np.arange(n, dtype=np.int64) * hop
    labels = np.zeros((n, len(AAMI_CLASSES)), bool)
    r = beats.samples
    if n and len(r):
        aami = beats.aami()
        for c, cls in enumerate(AAMI_CLASSES):
            peaks = np.sort(r[aami == cls])
            first = np.searchsorted(peaks, starts + edge_margin, side="left")
            last = np.searchsorted(peaks, starts + window - edge_margin, side="left")
            labels[:, c] = last > first
    full = beat_mask(n_samples, beats, fs)
    if n:
        mask = sliding_window_view(full, window)[::hop][:n]
    else:
        mask = np.zeros((0, window), np.int8)
    return Windows(starts=starts, labels=labels, mask=mask, window=window, hop=hop)
