"""Rhythm context for one window: where the beats are, and how early or late each one came.

Supraventricular ectopy is mostly a timing finding (a premature beat of near-normal shape), which
a small CNN on 5.5 s of z-scored ECG learns poorly across patients. These functions find R peaks
inside a window and paint two extra input channels, each beat's preceding and following RR
interval relative to a reference RR: the window's own median (stateless: the window alone
decides), or, with a card's `dsp.rhythm_context`, the median of the stream's recent RR intervals
(`RRHistory`, one per stream), so "premature" means early for this patient rather than for these
six beats. Trainer, offline path and live buffer feed the same windows in the same order, so they
compute the same channels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import scipy.ndimage
import scipy.signal

RHYTHM_CHANNELS = ("rr_prev", "rr_next")
WINDOW_CHANNELS = ("rr_prev_window", "rr_next_window")  # with a stream reference and both: the window's too
_REFRACTORY_S = 0.25  # no two QRS complexes closer than this
_INTEGRATE_S = 0.08  # energy smoothing, about one QRS width
_SEARCH_S = 0.06  # R peak sought within this of the energy peak
_HEIGHT = 0.3  # a peak must reach this share of the window's typical beat energy
PEAK_DETECTORS = ("energy", "energy_t")  # r_peaks' variants; a card names its own (DspConfig.peak_detector)
_T_PERCENTILE, _T_HEIGHT = 85, 0.2  # "energy_t": a peak reaches this share of this percentile of the candidates
_T_GAP_S, _T_SLOPE = 0.36, 0.5  # "energy_t": a candidate this soon after a kept peak, under this share of its slope, is a T wave
STREAM_REFERENCE_MIN_RR = 8  # RecentRhythm.centre: fewer held RRs do not stand for a stream's rhythm
STREAM_CONTEXT = 108000  # samples (5 min at 360 Hz) of a stream's RRs behind a "stream" prematurity reference
STREAM_CENTRES = ("median", "mean")  # RecentRhythm.centre: how a stream's recent RRs give its reference RR
RR_CLIP = (-0.8, 1.5)  # relative RR deviation is clipped to this range
WINDOW_REFERENCES = ("median", "mean")  # a window's own RRs' centre (rereferenced)
# what a beat is early against after the network (ModelCard.prematurity_reference): a window reference, or "stream",
# the prematurity_centre of the stream's RRs over the card's prematurity_context samples (stream_relative, per-stream
# state)
PREMATURITY_REFERENCES = WINDOW_REFERENCES + ("stream",)


def r_peaks(lead: np.ndarray, fs: float, detector: str = "energy") -> np.ndarray:
    """Sample indices of R peaks in one band-passed lead (a Pan-Tompkins-style energy detector).

    `detector` (a card's `dsp.peak_detector`; see PEAK_DETECTORS): "energy" keeps the candidates above 0.3 of the
    median of the larger half of the window's candidate energies; "energy_t" is `energy_t_peaks` at its defaults.
    The first placed tall T waves, and the P waves of slow or blocked rhythms, among the R peaks of records whose
    T or P waves are large (`bench/rpeaks.py`)."""
    if detector not in PEAK_DETECTORS:
        raise ValueError(f"unknown R-peak detector {detector!r}; expected one of {PEAK_DETECTORS}")
    if detector == "energy_t":
        return energy_t_peaks(lead, fs)
    x, slope, cand, heights = _candidates(lead, fs)
    if cand.size == 0:
        return cand
    # typical beat energy: the median of the larger half of the candidates, so a few huge
    # ectopic or artefact peaks do not hide the normal beats, and T waves fall below it
    return _snap(x, cand[heights >= _HEIGHT * np.median(np.sort(heights)[len(heights) // 2 :])], fs)


def energy_t_peaks(lead: np.ndarray, fs: float, percentile: float = _T_PERCENTILE, share: float = _T_HEIGHT,
                   t_wave: bool = True) -> np.ndarray:
    """The "energy_t" detector: candidates above `share` of the window's `percentile`-th candidate energy, less (with
    `t_wave`) each one within 0.36 s after the last kept peak with under half its steepest slope, a T wave as Pan
    and Tompkins tell it. The arguments are for `bench/rpeaks.py --grid`, which chose the defaults on DS1."""
    x, slope, cand, heights = _candidates(lead, fs)
    if cand.size == 0:
        return cand
    peaks = cand[heights >= share * np.percentile(heights, percentile)]
    return _snap(x, _without_t_waves(peaks, np.abs(slope), fs) if t_wave else peaks, fs)


def _candidates(lead: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lead as float64, its slope, energy peaks at least a refractory period apart, their energies); no candidates
    for a lead too short or not finite."""
    x = np.asarray(lead, dtype=np.float64)
    if x.size < 3 or not np.isfinite(x).all():
        return x, x, np.zeros(0, dtype=np.int64), np.zeros(0)
    slope = np.gradient(x)
    energy = scipy.ndimage.uniform_filter1d(slope ** 2, max(1, int(_INTEGRATE_S * fs)))
    cand, props = scipy.signal.find_peaks(energy, distance=max(1, int(_REFRACTORY_S * fs)), height=0)
    return x, slope, cand.astype(np.int64), props["peak_heights"]


def _without_t_waves(peaks: np.ndarray, slope: np.ndarray, fs: float) -> np.ndarray:
    """Candidates (sorted) less those within _T_GAP_S after the last kept one whose steepest slope within
    _INTEGRATE_S of them is under _T_SLOPE of its: the later hump of one beat is its T wave, not a second beat."""
    if peaks.size < 2:
        return peaks
    reach = max(1, int(_INTEGRATE_S * fs))
    steep = np.array([slope[max(0, p - reach) : p + reach + 1].max() for p in peaks])
    kept = [0]
    for k in range(1, peaks.size):
        last = kept[-1]
        if peaks[k] - peaks[last] >= _T_GAP_S * fs or steep[k] >= _T_SLOPE * steep[last]:
            kept.append(k)
    return peaks[kept]


def _snap(x: np.ndarray, peaks: np.ndarray, fs: float) -> np.ndarray:
    """Each energy peak moved to the largest |deviation| from the local median nearby, whatever the QRS polarity;
    all peaks whose search span lies whole in the window at once (one median over rows), those cut by an edge one by one."""
    half = max(1, int(_SEARCH_S * fs))
    out = np.empty(peaks.size, dtype=np.int64)
    whole = (peaks >= half) & (peaks + half + 1 <= x.size)
    if whole.any():
        lo = peaks[whole] - half
        segs = np.lib.stride_tricks.sliding_window_view(x, 2 * half + 1)[lo]
        out[whole] = lo + np.argmax(np.abs(segs - np.median(segs, axis=1, keepdims=True)), axis=1)
    for k in np.flatnonzero(~whole):
        lo, hi = max(0, peaks[k] - half), min(x.size, peaks[k] + half + 1)
        out[k] = lo + int(np.argmax(np.abs(x[lo:hi] - np.median(x[lo:hi]))))
    return np.unique(out)


def new_intervals(peaks: np.ndarray, start: int, n: int, newest: float, fs: float) -> tuple[list[tuple[int, int]], float]:
    """The RR intervals a window [start, start + n) with R peaks `peaks` (window-relative) adds to a stream whose newest
    peak taken so far is `newest` (absolute): (absolute later peak, RR in samples) pairs, and the new `newest`.

    Only peaks at least a refractory period from either edge count (a QRS cut by the edge misplaces its peak), and only
    intervals whose later peak is newer than any taken before, so overlapping windows add each beat once, whatever the
    hop, and no interval spans a gap in the stream (both peaks come from one window)."""
    peaks = np.asarray(peaks, np.int64)
    guard = int(_REFRACTORY_S * fs)
    inner = start + peaks[(peaks >= guard) & (peaks < n - guard)]
    jitter = guard // 2  # the same beat seen in two windows may be placed a few samples apart
    out = [(int(b), int(b - a)) for a, b in zip(inner[:-1], inner[1:]) if b > newest + jitter]
    return out, (max(newest, int(inner[-1])) if inner.size else newest)


def relative_rr(rr: np.ndarray) -> np.ndarray:
    """Consecutive RR intervals as the rr_prev channel reads them at their later R peaks, unclipped: 0 for the first
    beat (its RR is unknown), then each RR over their median, minus 1; empty for no RR. What `rr_irregularity` reads."""
    rr = np.asarray(rr, dtype=np.float64).reshape(-1)
    return np.concatenate([[0.0], rr / np.median(rr) - 1.0]) if rr.size else np.zeros(0)


class RRHistory:
    """One stream's most recent RR intervals, the patient's own reference for "early" and "late"
    (taken as `new_intervals` says)."""

    def __init__(self, size: int, fs: float) -> None:
        if size < 1:
            raise ValueError(f"RR history size must be >= 1, got {size}")
        self.fs = fs
        self.rr: deque[int] = deque(maxlen=size)
        self.newest = -np.inf  # absolute sample of the newest peak taken

    def update(self, peaks: np.ndarray, start: int, n: int) -> None:
        """Take the new intervals of the window [start, start + n) whose R peaks (window-relative) are `peaks`."""
        added, self.newest = new_intervals(peaks, start, n, self.newest, self.fs)
        self.rr.extend(rr for _, rr in added)

    def reference(self) -> float | None:
        return float(np.median(self.rr)) if self.rr else None


class RecentRhythm:
    """One stream's RR intervals whose later peak lies in the last `span` samples before the newest window's end (taken
    as `new_intervals` says), for rhythm measures longer than a window (interval_rule.regular_stream)."""

    def __init__(self, span: int, fs: float) -> None:
        if span < 1:
            raise ValueError(f"rhythm span must be >= 1 sample, got {span}")
        self.span, self.fs = span, fs
        self.rr: deque[tuple[int, int]] = deque()  # (absolute later peak, RR in samples), oldest first
        self.newest = -np.inf

    def update(self, peaks: np.ndarray, start: int, n: int) -> None:
        """Take the window [start, start + n)'s new intervals and forget those ending over `span` before its end."""
        added, self.newest = new_intervals(peaks, start, n, self.newest, self.fs)
        self.rr.extend(added)
        while self.rr and self.rr[0][0] < start + n - self.span:
            self.rr.popleft()

    @property
    def capacity(self) -> int:
        """The most intervals it can hold: no two R peaks lie closer than the refractory period."""
        return self.span // max(1, int(_REFRACTORY_S * self.fs)) + 1

    def intervals(self) -> np.ndarray:
        """The held RRs in samples, oldest first."""
        return np.array([r for _, r in self.rr], dtype=np.float64)

    def relative(self) -> np.ndarray:
        """The held RRs as `relative_rr` puts them."""
        return relative_rr(self.intervals())

    def centre(self, how: str) -> float:
        """The held RRs' "median" or "mean" (STREAM_CENTRES) in samples: the stream's own reference for "early"; NaN
        while it holds fewer than STREAM_REFERENCE_MIN_RR (a stream's first seconds, or after a gap longer than its span)."""
        if how not in STREAM_CENTRES:
            raise ValueError(f"a stream's reference RR is one of {STREAM_CENTRES}, got {how!r}")
        if len(self.rr) < STREAM_REFERENCE_MIN_RR:
            return float("nan")
        rr = self.intervals()
        return float(np.median(rr) if how == "median" else np.mean(rr))


def rr_channels(lead: np.ndarray, fs: float, reference: float | None = None, peaks: np.ndarray | None = None) -> np.ndarray:
    """(2, n) float32: each beat's span holds (RR before / reference - 1) and (RR after / reference - 1).

    The reference is the window's median RR unless one is given (the stream's, from `RRHistory`).
    A beat's span runs from halfway to the previous beat to halfway to the next; where an interval
    is unknown (the first and last beat, a window with under three beats) the channel is 0.
    """
    n = np.asarray(lead).shape[-1]
    out = np.zeros((2, n), dtype=np.float32)
    peaks = r_peaks(lead, fs) if peaks is None else peaks
    if peaks.size < 3:
        return out
    rr = np.diff(peaks).astype(np.float64)
    rel = np.clip(rr / (np.median(rr) if reference is None else reference) - 1.0, *RR_CLIP)
    bounds = np.concatenate([[0], (peaks[:-1] + peaks[1:]) // 2, [n]])
    for k in range(peaks.size):
        lo, hi = bounds[k], bounds[k + 1]
        if k > 0:
            out[0, lo:hi] = rel[k - 1]
        if k < peaks.size - 1:
            out[1, lo:hi] = rel[k]
    return out


def rereferenced(rel: np.ndarray, reference: str) -> np.ndarray:
    """A window's rr_prev channel read at its R peaks, in order (RR before each beat over the channel's reference,
    minus 1; the first beat's is unknown, 0), against `reference`. "median" gives it back. "mean" puts each known RR
    over the mean of the known RRs: the channel holds RR / median - 1, so RR / mean = (v + 1) / mean(v + 1), clipped
    as the channel is. Why the mean: where ectopic beats are most of the beats (runs between sinus pauses) their own RR
    is the median, so against it they are not early; the pauses pull the mean above them (docs/results_notes.md)."""
    if reference not in WINDOW_REFERENCES:
        raise ValueError(f"a window's prematurity reference must be one of {WINDOW_REFERENCES}, got {reference!r}")
    rel = np.asarray(rel, dtype=np.float64).reshape(-1)
    if reference == "median" or rel.size < 3:  # under three beats the channel holds no RR at all
        return rel
    ratio = rel[1:] + 1.0
    return np.concatenate([[0.0], np.clip(ratio / ratio.mean() - 1.0, *RR_CLIP)])


def add_rhythm(
    x: np.ndarray, fs: float, peaks: list[np.ndarray], history: RRHistory | None = None,
    starts: np.ndarray | None = None, both: bool = False,
) -> np.ndarray:
    """(B, leads, n) windows -> (B, leads + 2, n): the rhythm channels of the first lead appended.

    `peaks` are each window's R peaks in its first lead (`r_peaks`), found once by the caller. With a
    `history` the windows are a stream's, in order, starting at absolute samples `starts`: each first
    adds its intervals to the history, then is painted relative to the history's median (and with
    `both` also relative to its own median, two more channels: leads + 4).
    """
    x = np.asarray(x, dtype=np.float32)
    if history is not None and (starts is None or len(starts) != len(x)):
        raise ValueError("a stream RR history needs each window's absolute start sample, in stream order")
    both = both and history is not None
    rhythm = np.zeros((len(x), 4 if both else 2, x.shape[-1]), np.float32)
    for i, w in enumerate(x):
        if history is not None:
            history.update(peaks[i], int(starts[i]), w.shape[-1])
        rhythm[i, :2] = rr_channels(w[0], fs, history.reference() if history is not None else None, peaks[i])
        if both:
            rhythm[i, 2:] = rr_channels(w[0], fs, None, peaks[i])
    return np.concatenate([x, rhythm], axis=1)


def stream_relative(peaks: np.ndarray, stream_rr: float | None) -> np.ndarray | None:
    """A window's R peaks' RRs (from the peaks, in order; the first beat's unknown, 0) over a stream's reference RR
    `stream_rr` (samples), minus 1, clipped as the rhythm channels are; None when no usable reference is given (not
    finite or not positive: the stream holds too few RRs yet), so the caller falls back to the window's own."""
    if stream_rr is None or not np.isfinite(stream_rr) or stream_rr <= 0:
        return None
    peaks = np.asarray(peaks, dtype=np.int64).reshape(-1)
    rel = np.clip(np.diff(peaks) / float(stream_rr) - 1.0, *RR_CLIP) if peaks.size > 1 else np.zeros(0)
    return np.concatenate([np.zeros(min(peaks.size, 1)), rel])


def stream_references(leads: np.ndarray, starts: np.ndarray, fs: float, detector: str, memory: RecentRhythm,
                      centre: str = "median", peaks: list[np.ndarray] | None = None) -> np.ndarray:
    """Each of one stream's windows (first leads (B, n) of model input, in stream order, at absolute `starts`): the
    `centre` of the stream's RRs over `memory`'s span up to the window's end (samples; NaN while it holds too few),
    `memory` updated as it goes. The one computation the live buffer, the offline path and the trainer share.
    `peaks`: each window's R peaks when already found (`dsp.window_input_with_peaks`), else found here."""
    return stream_measures(leads, starts, fs, detector, memory, lambda m: m.centre(centre), peaks)


def stream_measures(leads: np.ndarray, starts: np.ndarray, fs: float, detector: str, memory: RecentRhythm,
                    measure: Callable[[RecentRhythm], float], peaks: list[np.ndarray] | None = None) -> np.ndarray:
    """Each of one stream's windows (first leads (B, n), in stream order, at absolute `starts`): `measure(memory)`
    once the window's R peaks (`peaks[i]`, else found here) are in `memory`. The one loop behind a stream's reference
    RR and its rhythm irregularity."""
    out = np.full(len(leads), np.nan)
    for i, (lead, start) in enumerate(zip(leads, np.atleast_1d(starts))):
        memory.update(r_peaks(lead, fs, detector) if peaks is None else peaks[i], int(start), lead.shape[-1])
        out[i] = measure(memory)
    return out
