"""Attention map -> abnormal-beat intervals: the one rule shared by the trainer's scoring and the runtime.

The map is normalised per window (A / max A), thresholded, gaps shorter than `merge_gap` are
closed and runs shorter than `min_len` are dropped. Each interval's score is its peak normalised
attention; intervals scoring under `min_score` are dropped (the map's weaker bumps are mostly
normal neighbours of the abnormal beat). Pure numpy, no torch, so the runtime can use it as is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .rhythm import STREAM_CENTRES, rereferenced, stream_relative


DISTINCT_HALF = 36  # samples either side of the R peak over which `distinct` reads the residual: 100 ms, the QRS
DISTINCT_EARLY = 0.1  # with `distinct_early`, a beat at least this share early keeps its V interval whatever its shape
P_WAVE_LEADS = ("first", "mean")  # IntervalRule.p_wave_leads
IRREGULAR_EARLY = 0.1  # `rr_irregularity` leaves out the RRs of beats at least this share early, and the RR after each


@dataclass(frozen=True)
class IntervalRule:
    threshold: float = 0.5  # fraction of the window's peak attention
    min_len: int = 36  # samples; 100 ms at 360 Hz, shorter than any QRS complex
    merge_gap: int = 36  # samples; closes dips inside one beat
    min_peak: float = 1e-6  # a window whose peak attention is below this has no intervals
    min_score: float = 0.0  # publish only intervals whose peak reaches this fraction of the window's peak
    # > 0: re-run an alarming window with each interval removed and publish only intervals whose removal lowers
    # the class logit by at least this fraction of the window's largest such drop (see postprocess.label_intervals)
    keep_drop: float = 0.0
    # > 0: move each interval onto the beat it lit: the R peak nearest the interval's attention peak, if one
    # lies within `snap` samples of the interval, published as R +- snap_half; an interval near no R peak is
    # dropped (see snap_to_beats). 0: publish the attention map's own extent.
    snap: int = 0
    snap_half: int = 36  # samples; 100 ms at 360 Hz, about a QRS complex either side of the R peak
    # > 0: S intervals go onto the window's premature beats, the R peaks whose rr_prev input channel is at most
    # -premature (see premature_beats); with premature_all false each S interval moves onto the most premature
    # such beat within premature_reach samples (else it is dropped), with it true an S-alarming window publishes
    # every premature beat outside its V intervals instead. Either as R +- snap_half. 0: off.
    premature: float = 0.0
    premature_all: bool = False
    premature_reach: int = 72  # samples; 200 ms at 360 Hz
    # > 0, with premature_all: an early beat is marked only where the window's attention map at its R peak is at least
    # premature_attention of the map's peak: the beat the network's segmentation lights, not every early beat. 0: off.
    premature_attention: float = 0.0
    # > 0: premature counts only the early beats that match the window's median beat, residual channel RMS over
    # R +- DISTINCT_HALF samples < premature_usual (z-scored units), as an S beat's QRS is the patient's usual one;
    # early PVCs outside the V intervals and noise read as beats do not. So S intervals move onto, or (premature_all)
    # are published on, usual-shaped early beats only. A window with an all-zero residual (no median beat) keeps
    # them all. 0: off.
    premature_usual: float = 0.0
    # > 0: premature also counts a beat no later than the reference whose RR before is at most 1 - premature_pause of
    # its RR after, both from the window's R peaks: an early beat followed by its pause, judged without the reference,
    # which runs of ectopic beats or pauses can shift. 0: off.
    premature_pause: float = 0.0
    premature_pause_early: float = 0.0  # with premature_pause: how early (share of the reference) such a beat must be
    # with premature_all and premature_usual: in a window alarming for S and V, an attention interval the occlusion
    # gives to S (which premature_all would drop, its S marks coming from the early beats) goes to V instead when the
    # beat it lit is not usual-shaped (qrs_residual >= premature_usual); the V rules then judge it as any V interval.
    shape_split: bool = False
    # > 0: premature reads each beat's RR (from the window's R peaks) against the premature_centre ("median" or
    # "mean") of the stream's RRs over the last premature_context samples up to the window's end (per-stream state,
    # rhythm.RecentRhythm; postprocess.stream_rr_reference), not the window's own: among runs of S beats the window's
    # median is theirs. Until the stream holds STREAM_REFERENCE_MIN_RR RRs the window's own reference is used. 0: off.
    premature_context: int = 0
    premature_centre: str = "median"
    # > 0: a V interval is kept only if the beat it lit (lit_beat) differs from the window's median beat: residual
    # channel RMS over R +- DISTINCT_HALF samples >= distinct (z-scored units); with distinct_early also if that beat
    # came >= DISTINCT_EARLY early. Intervals near no R peak, and windows with an all-zero residual, keep theirs.
    distinct: float = 0.0
    distinct_early: bool = False
    # > 0: S intervals are published only in windows whose rhythm is regular once its early beats are set aside:
    # rr_irregularity (coefficient of variation of the other RRs) <= regular. 0: off.
    regular: float = 0.0
    # > 0: S intervals are published only in windows whose *stream* has been regular over the last regular_context
    # samples that end with the window: rr_irregularity of the stream's RRs there (per-stream state,
    # rhythm.RecentRhythm; postprocess.stream_irregularity) <= regular_stream. 0: off.
    regular_stream: float = 0.0
    regular_context: int = 10800  # samples; 30 s at 360 Hz
    # > 0: S intervals are published only in windows whose first lead has a kurtosis (quality.kurtosis_sqi, normal = 3)
    # of at least min_kurtosis: noise hides and fakes the P waves and timings an S call rests on. 0: off.
    min_kurtosis: float = 0.0
    # > 0: S intervals are published only in windows whose first lead keeps one P wave across its beats:
    # morphology.p_wave_consistency (mean correlation of each beat's 250-80 ms before R with the median beat's) >=
    # min_p_consistency; a window it cannot judge (under 3 whole beats) keeps them. Atrial fibrillation has no P
    # wave and irregular RRs the timing tests read as early beats. 0: off.
    min_p_consistency: float = 0.0
    p_wave_leads: str = "first"  # which leads min_p_consistency reads: "first", or "mean" of every lead's (NaN ones left out)
    # an interval is published once this many windows have lit it (postprocess.IntervalMerger): successive windows
    # overlap, so a beat is seen about window / hop times, and a lone window's call is the likeliest to be wrong.
    # Costs up to confirm - 1 hops of alarm latency. 1: the first window that lights it publishes it.
    confirm: int = 1
    # > 0: a window publishes no interval whose centre lies in its first left_edge samples. There the beat is the
    # window's oldest, with no RR before it, and the earlier windows that held it nearer their middle did not light
    # it; out of fold on DS1 most such last-chance calls were wrong. A stream's first left_edge samples go unmarked.
    left_edge: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold={self.threshold} must lie in (0, 1)")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score={self.min_score} must lie in [0, 1]")
        if not 0.0 <= self.keep_drop <= 1.0:
            raise ValueError(f"keep_drop={self.keep_drop} must lie in [0, 1]")
        if self.snap < 0 or self.snap_half < 1:
            raise ValueError("snap must be >= 0 and snap_half >= 1")
        if self.distinct < 0.0:
            raise ValueError(f"distinct={self.distinct} must be >= 0")
        if self.regular < 0.0:
            raise ValueError(f"regular={self.regular} must be >= 0")
        if self.left_edge < 0:
            raise ValueError(f"left_edge={self.left_edge} must be >= 0")
        if self.confirm < 1:
            raise ValueError(f"confirm={self.confirm} must be >= 1")
        if not 0.0 <= self.min_p_consistency < 1.0 or self.p_wave_leads not in P_WAVE_LEADS:
            raise ValueError(f"min_p_consistency={self.min_p_consistency} must lie in [0, 1) and p_wave_leads "
                             f"{self.p_wave_leads!r} be one of {P_WAVE_LEADS}")
        if self.min_kurtosis < 0.0:
            raise ValueError(f"min_kurtosis={self.min_kurtosis} must be >= 0")
        if self.regular_stream < 0.0 or self.regular_context < 1:
            raise ValueError(f"regular_stream={self.regular_stream} must be >= 0 and regular_context >= 1")
        if not 0.0 <= self.premature_pause < 1.0:
            raise ValueError(f"premature_pause={self.premature_pause} must lie in [0, 1)")
        if not 0.0 <= self.premature_pause_early < 1.0 or (self.premature_pause_early > 0 and not self.premature_pause > 0):
            raise ValueError(f"premature_pause_early={self.premature_pause_early} must lie in [0, 1), and needs premature_pause")
        if not 0.0 <= self.premature_attention <= 1.0 or (self.premature_attention > 0 and not self.premature_all):
            raise ValueError(f"premature_attention={self.premature_attention} must lie in [0, 1], and needs premature_all")
        if self.premature_usual < 0.0:
            raise ValueError(f"premature_usual={self.premature_usual} must be >= 0")
        if not 0.0 <= self.premature < 1.0 or self.premature_reach < 0:
            raise ValueError(f"premature={self.premature} must lie in [0, 1) and premature_reach >= 0")
        if self.premature_context < 0 or self.premature_centre not in STREAM_CENTRES:
            raise ValueError(f"premature_context={self.premature_context} must be >= 0 and premature_centre "
                             f"{self.premature_centre!r} one of {STREAM_CENTRES}")
        if self.min_len < 1 or self.merge_gap < 0:
            raise ValueError("min_len must be >= 1 and merge_gap >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IntervalRule":
        return cls(**d)


def runs(mask: np.ndarray) -> np.ndarray:
    """(k, 2) array of [start, end) of the True runs of a 1-D boolean mask."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return edges.reshape(-1, 2)


def attention_to_intervals(a: np.ndarray, rule: IntervalRule = IntervalRule()) -> list[tuple[int, int, float]]:
    """Intervals [(start, end, score)] (end exclusive, window-relative samples) from one map of shape (T,)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    peak = float(a.max(initial=0.0))
    if not np.isfinite(peak) or peak < rule.min_peak:
        return []
    norm = a / peak
    segs = runs(norm >= rule.threshold)
    if len(segs) == 0:
        return []
    merged = [list(segs[0])]
    for s, e in segs[1:]:
        if s - merged[-1][1] <= rule.merge_gap:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    out = [(int(s), int(e), float(norm[s:e].max())) for s, e in merged if e - s >= rule.min_len]
    return [iv for iv in out if iv[2] >= rule.min_score]


def inside_any(positions: np.ndarray, intervals: list[tuple[int, int, float]] | np.ndarray, tol: int = 0) -> np.ndarray:
    """Boolean per position: does it fall inside some interval widened by `tol` samples each side?"""
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    out = np.zeros(len(pos), dtype=bool)
    for s, e, *_ in intervals:
        out |= (pos >= s - tol) & (pos < e + tol)
    return out


def snap_to_beats(intervals: list[tuple[int, int, float]], a: np.ndarray, peaks: np.ndarray, n: int,
                  rule: IntervalRule) -> list[tuple[int, int, float]]:
    """Intervals moved onto the beats they point at: for each, the R peak (`peaks`, window-relative)
    nearest the sample where its attention peaks, if that R peak lies within `rule.snap` samples of
    the interval, as [R - snap_half, R + snap_half) clipped to the window's `n` samples; intervals
    that reach no R peak are dropped, and two intervals on one beat publish it once (the higher score).

    Why: the attention map is a smooth bump that can sit beside the QRS complex (on its T wave or
    pause), and a bedside user may want the beat, not the bump. Measured out of fold on DS1 it moved
    the beat scores little (docs/results_notes.md), so it is off in the shipped cards."""
    if rule.snap <= 0:
        return list(intervals)
    peaks = np.sort(np.asarray(peaks, dtype=np.int64).reshape(-1))
    if len(intervals) == 0 or len(peaks) == 0:
        return []
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    best: dict[int, float] = {}
    for s, e, score in intervals:
        r = lit_beat(s, e, a, peaks, rule.snap)
        if r is not None:
            best[r] = max(best.get(r, -np.inf), score)
    return [(max(0, r - rule.snap_half), min(n, r + rule.snap_half), sc) for r, sc in sorted(best.items())]


def premature_beats(peaks: np.ndarray, rr_prev: np.ndarray, premature: float,
                    reference: str = "median", stream_rr: float | None = None,
                    pause: float = 0.0, pause_early: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The R peaks (window-relative) whose beat came at least `premature` early, and how early each came:
    `rr_prev` is the window's rr_prev input channel (RR before each beat over the reference RR, minus 1,
    painted over the beat's span; 0 where unknown), read at the R peak, and taken against `reference`
    (`rhythm.rereferenced`: the channel's own median, or the mean of the window's RRs). With a usable `stream_rr`
    (samples; the stream's recent reference RR, `postprocess.stream_rr_reference`) each beat's RR from the peaks is
    taken over it instead (`rhythm.stream_relative`). With `pause` > 0 a beat at least `pause_early` early (0: no
    later than the reference) whose RR before is at most 1 - pause of its RR after (both from the peaks: an early beat
    and the pause after it) counts too; a beat with no peak after it in the window is judged on its RR before alone."""
    peaks = np.sort(np.asarray(peaks, dtype=np.int64).reshape(-1))
    peaks = peaks[(peaks >= 0) & (peaks < len(rr_prev))]
    rel = stream_relative(peaks, stream_rr)
    if rel is None:  # no stream reference (yet): the window's own; a "stream" card's channel holds its median
        rel = rereferenced(np.asarray(rr_prev, dtype=np.float64)[peaks], "median" if reference == "stream" else reference)
    early = rel <= -premature
    if pause > 0 and peaks.size > 2:
        rr = np.diff(peaks).astype(np.float64)
        before_pause = np.zeros(peaks.size, dtype=bool)
        before_pause[1:-1] = rr[:-1] <= (1.0 - pause) * rr[1:]
        early |= before_pause & (rel <= -pause_early)
    return peaks[early], rel[early]


def rr_irregularity(rel: np.ndarray) -> float:
    """How irregular a window's rhythm is apart from its early beats: the coefficient of variation of its RRs once
    each RR at least IRREGULAR_EARLY shorter than the median, and the RR after it, are left out. `rel` is the rr_prev
    channel read at the window's R peaks, in order (RR over the reference, minus 1; the first beat's unknown). 0 when
    fewer than three RRs remain (it cannot be judged).

    Why: a premature beat and its pause are two odd RRs in a steady rhythm; in atrial fibrillation every RR differs,
    and the rhythm channels read its short RRs as prematurity, so S alarms there mark normal beats."""
    rel = np.asarray(rel, dtype=np.float64).reshape(-1)
    if rel.size < 4:
        return 0.0
    ratio = rel[1:] + 1.0
    early = np.flatnonzero(ratio <= (1.0 - IRREGULAR_EARLY) * np.median(ratio))
    keep = np.ones(ratio.size, dtype=bool)
    keep[early] = False
    keep[np.minimum(early + 1, ratio.size - 1)] = False
    rest = ratio[keep]
    return float(np.std(rest) / np.mean(rest)) if rest.size >= 3 and np.mean(rest) > 0 else 0.0


def onto_premature(intervals: list[tuple[int, int, float]], early: np.ndarray, rel: np.ndarray, n: int,
                   rule: IntervalRule) -> list[tuple[int, int, float]]:
    """S intervals moved onto premature beats (`premature_beats`): each goes to the most premature beat
    lying within `rule.premature_reach` samples of it, as [R - snap_half, R + snap_half) clipped to the
    window's `n` samples, or is dropped when none does; two on one beat publish it once (the higher score).

    Why: an S beat is a timing finding that looks like its neighbours, so the attention map, learnt from
    class labels alone, often marks a normal neighbour; every AAMI S beat comes early."""
    best: dict[int, float] = {}
    for s, e, score in intervals:
        near = (early >= s - rule.premature_reach) & (early < e + rule.premature_reach)
        if near.any():
            r = int(early[near][np.argmin(rel[near])])
            best[r] = max(best.get(r, -np.inf), score)
    return [(max(0, r - rule.snap_half), min(n, r + rule.snap_half), sc) for r, sc in sorted(best.items())]


def lit_beat(s: int, e: int, a: np.ndarray, peaks: np.ndarray, reach: int) -> int | None:
    """The R peak (window-relative) nearest the sample where the interval [s, e) peaks in attention `a`, if it lies
    within `reach` samples of the interval; else None."""
    peaks = np.asarray(peaks, dtype=np.int64).reshape(-1)
    if len(peaks) == 0:
        return None
    top = s + int(np.argmax(np.asarray(a)[s:e]))
    r = int(peaks[np.argmin(np.abs(peaks - top))])
    return r if max(s - r, r - (e - 1), 0) <= reach else None


def qrs_residual(residual: np.ndarray, r: int) -> float:
    """RMS of the residual channel over R +- DISTINCT_HALF samples: how far the beat at `r` is from the window's
    median beat (`stream_ecg.morphology.beat_residual`), read alike by `distinct` (V) and `premature_usual` (S)."""
    qrs = np.asarray(residual, dtype=np.float64).reshape(-1)[max(0, r - DISTINCT_HALF) : r + DISTINCT_HALF + 1]
    return float(np.sqrt(np.mean(qrs ** 2))) if qrs.size else 0.0


def usual_shaped(peaks: np.ndarray, residual: np.ndarray, usual: float) -> np.ndarray:
    """(len(peaks),) bool: does each R peak's beat match the window's median beat (`qrs_residual` < usual)? All True
    when the residual is all zero (no median beat to judge by) or `usual` is 0 (off)."""
    peaks = np.asarray(peaks, dtype=np.int64).reshape(-1)
    if usual <= 0 or not np.any(residual):
        return np.ones(peaks.size, dtype=bool)
    return np.array([qrs_residual(residual, int(r)) < usual for r in peaks], dtype=bool)


def distinct_beats(intervals: list[tuple[int, int, float]], a: np.ndarray, peaks: np.ndarray, residual: np.ndarray,
                   rr_prev: np.ndarray | None, rule: IntervalRule) -> list[bool]:
    """Per interval: keep it under `rule.distinct`? True when the beat it lit differs from the window's median beat
    (residual RMS over its QRS >= distinct), or came early (with `rr_prev`, the rr_prev channel, and
    `distinct_early`), or cannot be judged (no R peak within reach, or an all-zero residual: no median beat).

    Why: a patient whose usual beat is wide (bundle branch block) has every beat read as V by a network that never
    saw them, yet every beat matches the window's median beat; a real ectopic beat does not."""
    residual = np.asarray(residual, dtype=np.float64).reshape(-1)
    if not np.any(residual):
        return [True] * len(intervals)
    keep = []
    for s, e, _ in intervals:
        r = lit_beat(s, e, a, peaks, rule.premature_reach)
        if r is None:
            keep.append(True)
            continue
        early = rule.distinct_early and rr_prev is not None and float(rr_prev[r]) <= -DISTINCT_EARLY
        keep.append(bool(qrs_residual(residual, r) >= rule.distinct or early))
    return keep
