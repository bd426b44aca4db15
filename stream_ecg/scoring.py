"""Pure scoring functions: classification metrics and the localisation grade.

Shared by the trainer's experiments and the runtime's live evaluation so both grade alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from .intervals import inside_any


def binary_metrics(y_true: np.ndarray, prob_pos: np.ndarray, positive: int = 0, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity and specificity with respect to class `positive`, and ROC AUC.

    For two classes the mean of the per-class one-vs-rest AUCs equals the AUC of either class.
    """
    y_true = np.asarray(y_true)
    is_pos = y_true == positive
    pred_pos = np.asarray(prob_pos) >= threshold
    tp = int(np.sum(pred_pos & is_pos))
    tn = int(np.sum(~pred_pos & ~is_pos))
    fp = int(np.sum(pred_pos & ~is_pos))
    fn = int(np.sum(~pred_pos & is_pos))
    return {
        "accuracy": (tp + tn) / max(len(y_true), 1),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "auc": auc(is_pos, prob_pos),
    }


def auc(is_pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present (instead of raising)."""
    is_pos = np.asarray(is_pos, bool)
    if is_pos.all() or not is_pos.any():
        return float("nan")
    return float(roc_auc_score(is_pos, score))


def mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(np.nanmean(arr)), "std": float(np.nanstd(arr))}


@dataclass(frozen=True)
class GradeCounts:
    """Localisation grades over windows, and beat-level hit/suppression counts."""

    grade_i: int = 0
    grade_ii: int = 0
    grade_iii: int = 0
    abnormal_hit: int = 0
    abnormal_total: int = 0
    normal_inside: int = 0
    normal_total: int = 0

    def __add__(self, other: "GradeCounts") -> "GradeCounts":
        return GradeCounts(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, ...]:
        return (self.grade_i, self.grade_ii, self.grade_iii, self.abnormal_hit, self.abnormal_total,
                self.normal_inside, self.normal_total)

    @property
    def windows(self) -> int:
        return self.grade_i + self.grade_ii + self.grade_iii

    def summary(self) -> dict:
        n = max(self.windows, 1)
        return {
            "grade": {"I": self.grade_i / n, "II": self.grade_ii / n, "III": self.grade_iii / n},
            "abnormal_hit_rate": self.abnormal_hit / self.abnormal_total if self.abnormal_total else float("nan"),
            "normal_suppression_rate": 1 - self.normal_inside / self.normal_total if self.normal_total else float("nan"),
            "windows": self.windows,
        }


def grade_window(intervals, abnormal_pos: np.ndarray, normal_pos: np.ndarray, tol: int = 0) -> GradeCounts:
    """Grade one window: I = every abnormal R peak inside an interval and no normal one;
    II = every abnormal inside, some normal inside; III = otherwise (some abnormal beat missed)."""
    ab = inside_any(abnormal_pos, intervals, tol)
    no = inside_any(normal_pos, intervals, tol)
    all_hit = bool(ab.all())
    grade = (1, 0, 0) if all_hit and not no.any() else (0, 1, 0) if all_hit else (0, 0, 1)
    return GradeCounts(*grade, int(ab.sum()), len(ab), int(no.sum()), len(no))


def located_metrics(truth: np.ndarray, located: np.ndarray) -> dict:
    """Window Se and precision of the located alarms (alarm and a mark of the class in the window) against the
    windows that hold a beat of the class; NaN where undefined."""
    truth, located = np.asarray(truth, bool), np.asarray(located, bool)
    hit = int((truth & located).sum())
    return {"se": hit / truth.sum() if truth.any() else float("nan"),
            "precision": hit / located.sum() if located.any() else float("nan"),
            "windows": int(located.sum())}


def window_targets(starts: np.ndarray, window: int, beat_samples: np.ndarray, beat_cls: np.ndarray, cls: str, margin: int = 0) -> np.ndarray:
    """(n,) bool: does each window hold an R peak of class `cls` at least `margin` samples inside?"""
    pos = np.sort(np.asarray(beat_samples)[np.asarray(beat_cls) == cls])
    lo = np.searchsorted(pos, starts + margin, side="left")
    hi = np.searchsorted(pos, starts + window - margin, side="left")
    return hi > lo


def detection_metrics(truth: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Window-level sensitivity, precision and AUC of one class, with the counts behind them."""
    truth = np.asarray(truth, bool)
    pred = np.asarray(score) >= threshold
    tp, fp, fn = int(np.sum(pred & truth)), int(np.sum(pred & ~truth)), int(np.sum(~pred & truth))
    return {
        "se": tp / (tp + fn) if tp + fn else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "auc": auc(truth, score),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n": int(len(truth)),
    }


# EC57 as WFDB's `bxb` computes it: a V call on a fusion (F) or unclassifiable (Q) beat, or an S call on a Q beat, is
# neither a true nor a false positive (VEB +P = Vv / (Vv + Nv + Sv + Ov + Xv), SVEB +P = Ss / (Ss + Ns + Vs + Fs + Os + Xs)).
# de Chazal 2004's figures are counted so; `ppv_ec57` is the like-for-like number beside them.
EC57_NOT_COUNTED = {"V": ("F", "Q"), "S": ("Q",)}


@dataclass(frozen=True)
class BeatCounts:
    """Beat-level matching of one class: annotated beats found, published intervals confirmed, and the
    unconfirmed intervals EC57 would not count against the class (`EC57_NOT_COUNTED`)."""

    beats_found: int = 0
    beats: int = 0
    intervals_confirmed: int = 0
    intervals: int = 0
    intervals_excluded: int = 0

    def __add__(self, other: "BeatCounts") -> "BeatCounts":
        return BeatCounts(self.beats_found + other.beats_found, self.beats + other.beats,
                          self.intervals_confirmed + other.intervals_confirmed, self.intervals + other.intervals,
                          self.intervals_excluded + other.intervals_excluded)

    def summary(self) -> dict[str, float]:
        """`ppv` counts every published interval (the issue's definition: the share that holds a beat of its
        class); `ppv_ec57` leaves out the `ec57_excluded` ones, as EC57 and de Chazal 2004 count."""
        counted = self.intervals - self.intervals_excluded
        return {
            "se": self.beats_found / self.beats if self.beats else float("nan"),
            "ppv": self.intervals_confirmed / self.intervals if self.intervals else float("nan"),
            "ppv_ec57": self.intervals_confirmed / counted if counted else float("nan"),
            "beats": self.beats,
            "intervals": self.intervals,
            "ec57_excluded": self.intervals_excluded,
        }


def beat_counts(beat_samples: np.ndarray, beat_cls: np.ndarray, intervals, cls: str, tol: int, start: int = 0) -> BeatCounts:
    """Se/+P counts for class `cls`: a beat is found when an interval of its class lies within `tol`
    samples of its R peak (EC57's 150 ms match window); an interval is confirmed when it holds such a
    beat, and EC57-excluded when it holds none but holds beats, every one of a class EC57 does not count
    against `cls` (an interval that also lit a normal beat stays a false positive). Only beats and
    intervals from sample `start` on are scored."""
    samples, labels = np.asarray(beat_samples, dtype=np.int64), np.asarray(beat_cls)
    scored = samples >= start
    order = np.argsort(samples[scored], kind="stable")
    samples, labels = samples[scored][order], labels[scored][order]
    pos = samples[labels == cls]
    ivs = [(iv.start, iv.end) for iv in intervals if iv.label == cls and iv.end > start]
    found = inside_any(pos, [(s, e, 0.0) for s, e in ivs], tol)
    s, e = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (zip(*ivs) if ivs else ([], [])))
    lo, hi = np.searchsorted(samples, s - tol, side="left"), np.searchsorted(samples, e + tol, side="left")

    def held(mask: np.ndarray) -> np.ndarray:  # per interval: does it hold a beat in `mask`?
        cum = np.concatenate([[0], np.cumsum(mask)])
        return cum[hi] > cum[lo]

    confirmed = held(labels == cls)
    excluded = ~confirmed & (hi > lo) & ~held(~np.isin(labels, EC57_NOT_COUNTED.get(cls, ())))
    return BeatCounts(int(found.sum()), int(len(pos)), int(confirmed.sum()), len(ivs), int(excluded.sum()))



def _covering(beat_samples: np.ndarray, beat_cls: np.ndarray, intervals, first_seen: np.ndarray, cls: str,
              tol: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The beats of `cls`, the (beats, intervals) matrix of which of its class's intervals covers each
    (as `beat_counts` matches, +-tol), and the start of the window that first published each interval."""
    pos = np.asarray(beat_samples, dtype=np.int64)[np.asarray(beat_cls) == cls]
    ivs = [(iv.start, iv.end, int(f)) for iv, f in zip(intervals, first_seen) if iv.label == cls]
    s, e, f = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (zip(*ivs) if ivs else ([], [], [])))
    return pos, (pos[:, None] >= s[None, :] - tol) & (pos[:, None] < e[None, :] + tol), f


def detection_delays(beat_samples: np.ndarray, beat_cls: np.ndarray, intervals, first_seen: np.ndarray,
                     cls: str, tol: int, window: int) -> np.ndarray:
    """Samples from each found beat of `cls` to the end of the first window that published an
    interval of its class covering it: the stream's share of the alarm latency, before any chunking
    or processing time. Beats never covered are left out."""
    pos, cover, f = _covering(beat_samples, beat_cls, intervals, first_seen, cls, tol)
    found = cover.any(axis=1)
    first = np.where(cover, f[None, :], np.iinfo(np.int64).max).min(axis=1, initial=np.iinfo(np.int64).max)
    return np.maximum(first[found] + window - pos[found], 0)


def distribution(values: np.ndarray) -> dict:
    """p50 / p95 / max / mean / n of the finite values (None when there are none): latencies and delays."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"p50": None, "p95": None, "max": None, "mean": None, "n": 0}
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "max": float(v.max()),
            "mean": float(v.mean()), "n": int(len(v))}


def first_window_outcome(starts: np.ndarray, window: int, alarms: np.ndarray, beat_samples: np.ndarray,
                         beat_cls: np.ndarray, intervals, first_seen: np.ndarray, cls: str, tol: int,
                         margin: int) -> dict[str, int]:
    """Where a beat's first chance goes: for each beat of `cls`, the first window holding it at least
    `margin` samples from both edges (as `window_targets` counts a core beat); does that window alarm
    for the class (`alarms`, one bool per window), and was the beat lit by then (an interval of its
    class covering it, published by that window or an earlier one)? A late beat lacked one of the two."""
    starts = np.asarray(starts, np.int64)
    pos, cover, f = _covering(beat_samples, beat_cls, intervals, first_seen, cls, tol)
    k = np.searchsorted(starts, pos - window + margin + 1)  # first start with pos < start + window - margin
    held = k < len(starts)
    held[held] = pos[held] >= starts[k[held]] + margin  # else no window holds the beat away from its edges
    first_start = starts[k[held]]
    lit = (cover[held] & (f[None, :] <= first_start[:, None])).any(axis=1)
    return {"beats": int(held.sum()), "alarmed": int(np.asarray(alarms)[k[held]].sum()), "lit": int(lit.sum())}


def unconfirmed_intervals(beat_samples: np.ndarray, beat_cls: np.ndarray, intervals, first_seen: np.ndarray,
                          cls: str, tol: int, window: int, start: int = 0) -> dict:
    """Why published intervals of `cls` hold no beat of their class (as `beat_counts` confirms, +-tol):
    `false_alarm`, the window that first published it held no beat of the class at all (the window's
    alarm was wrong); else `other_beat`, it lit an annotated beat of another class (a normal neighbour)
    or `no_beat`, it lit no annotated beat (between beats: the ectopic beat's T wave or pause). `gap_s`:
    for the last two, how far the interval (+-tol) lies from the nearest beat of its class, which says
    whether moving the interval onto a nearby beat could confirm it."""
    samples = np.asarray(beat_samples, dtype=np.int64)
    is_cls = np.asarray(beat_cls) == cls
    pos, others = samples[is_cls & (samples >= start)], samples[~is_cls & (samples >= start)]
    ivs = [(iv.start, iv.end, int(f)) for iv, f in zip(intervals, first_seen) if iv.label == cls and iv.end > start]
    s, e, f = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (zip(*ivs) if ivs else ([], [], [])))
    lo, hi = s - tol, e + tol

    def holds(p: np.ndarray) -> np.ndarray:
        return ((p[:, None] >= lo[None, :]) & (p[:, None] < hi[None, :])).any(axis=0)

    unconfirmed = ~holds(pos)
    in_view = window_targets(f, window, samples, np.asarray(beat_cls), cls)
    other = holds(others)
    lit_wrong = unconfirmed & in_view
    if len(pos):
        gap = np.maximum(np.maximum(lo[None, :] - pos[:, None], pos[:, None] - (hi[None, :] - 1)), 0).min(axis=0)
    else:
        gap = np.full(len(s), np.inf)
    return {
        "intervals": int(len(s)),
        "unconfirmed": int(unconfirmed.sum()),
        "false_alarm": int((unconfirmed & ~in_view).sum()),
        "other_beat": int((lit_wrong & other).sum()),
        "no_beat": int((lit_wrong & ~other).sum()),
        "gap_samples": gap[lit_wrong],
    }
