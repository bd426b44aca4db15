"""How early the annotated S beats come against the RR around them: where a rule that reads prematurity can work.

`interval_rule.premature` and the rhythm fusion read an S beat as early against the window's median RR. That holds
when normal beats set the rhythm and fails where ectopic beats are most of the beats (their own RR is the median).
This measures it on the reference annotations alone, no model, so it says which records a timing rule can serve,
and, with the N beats that come as early (`N_early`), what the rule costs on normal beats. `reference` chooses the
RR they are early against: the median of the RR intervals around the beat, or their mean
(`stream_ecg.rhythm.WINDOW_REFERENCES`), which long pauses between runs of ectopic beats pull above the ectopic
beats' own RR. `irregularity_report` measures, on the same annotations, how `interval_rule.regular`'s irregularity
tells windows in atrial fibrillation from windows with S beats.
"""

from __future__ import annotations

import numpy as np

from stream_ecg.data.mitdb import DS1, DS2, load_beats, load_rhythms
from stream_ecg.intervals import rr_irregularity
from stream_ecg.rhythm import STREAM_REFERENCE_MIN_RR, WINDOW_REFERENCES, relative_rr

FIBRILLATION = ("(AFIB", "(AFL")  # MIT-BIH rhythm labels of atrial fibrillation and flutter


def rr_prev_relative(samples: np.ndarray, window: int, reference: str = "median", context: int = 0) -> np.ndarray:
    """Per beat (from the second on): its preceding RR over the `reference` ("median" or "mean") of the RR intervals
    ending inside the `window` samples centred on it, minus 1 (how the rhythm channels paint a beat, but from the
    annotations). With `context` > 0, over the `reference` of the RRs that end in the `context` samples before the
    beat's own (causal: what a stream had seen; 0 while it had seen fewer than STREAM_REFERENCE_MIN_RR)."""
    if reference not in WINDOW_REFERENCES:
        raise ValueError(f"reference must be one of {WINDOW_REFERENCES}, got {reference!r}")
    centre = np.median if reference == "median" else np.mean
    samples = np.asarray(samples, np.int64)
    rr, ends = np.diff(samples), samples[1:]
    if context > 0:
        lo = np.searchsorted(ends, ends - context, side="left")
        return np.array([rr[k] / centre(rr[a:k]) - 1.0 if k - a >= STREAM_REFERENCE_MIN_RR else 0.0 for k, a in enumerate(lo)])
    lo = np.searchsorted(ends, ends - window // 2, side="left")
    hi = np.searchsorted(ends, ends + window // 2, side="left")
    return np.array([rr[k] / centre(rr[a:b]) - 1.0 for k, (a, b) in enumerate(zip(lo, hi))])


def s_prematurity(samples: np.ndarray, aami: np.ndarray, window: int, premature: float, reference: str = "median",
                  context: int = 0) -> dict:
    """Beats, S beats, the S beats whose preceding RR is at least `premature` shorter than the RR around them (or, with
    `context`, before them), and the N beats that come as early (what a timing rule would wrongly take for S)."""
    rel = rr_prev_relative(samples, window, reference, context)
    aami = np.asarray(aami)
    s, n = aami[1:] == "S", aami[1:] == "N"
    return {"beats": int(len(samples)), "S": int(s.sum() + (len(aami) > 0 and aami[0] == "S")),
            "S_early": int((rel[s] <= -premature).sum()), "N": int(n.sum() + (len(aami) > 0 and aami[0] == "N")),
            "N_early": int((rel[n] <= -premature).sum())}


def prematurity_report(records: str = "DS1,DS2", window: int = 2000, premature: float = 0.1, data_dir=None,
                       reference: str = "median", context: int = 0) -> dict:
    """Per record and pooled per database half: S share of the beats, share of S beats that come early, and share
    of N beats that come as early."""
    groups = _groups(records)
    rows = {}
    for name in (n for names in groups.values() for n in names):
        beats = load_beats(name, data_dir)
        rows[name] = s_prematurity(beats.samples, beats.aami(), window, premature, reference, context)
        rows[name]["S_share"] = rows[name]["S"] / max(rows[name]["beats"], 1)
        rows[name]["S_early_share"] = rows[name]["S_early"] / rows[name]["S"] if rows[name]["S"] else None
        rows[name]["N_early_share"] = rows[name]["N_early"] / rows[name]["N"] if rows[name]["N"] else None
    pooled = {}
    for part, names in groups.items():
        tot = {k: sum(rows[n][k] for n in names) for k in ("S", "S_early", "N", "N_early")}
        pooled[part] = {**tot, "S_early_share": tot["S_early"] / tot["S"] if tot["S"] else None,
                        "N_early_share": tot["N_early"] / tot["N"] if tot["N"] else None}
    return {"window": window, "context": context, "premature": premature, "reference": reference, "records": rows,
            "pooled": pooled}


def _groups(records: str) -> dict[str, list[str]]:
    return {part: list(DS1 if part == "DS1" else DS2 if part == "DS2" else (part,)) for part in records.split(",")}


def window_irregularity(samples: np.ndarray, aami: np.ndarray, rhythm_at: np.ndarray, rhythm: np.ndarray,
                        window: int, hop: int, context: int = 0) -> list[tuple[bool, bool, float]]:
    """Per window of `window` samples every `hop` (with at least four annotated beats): whether one of its beats lies in
    atrial fibrillation or flutter, whether it holds an S beat after its first, and `rr_irregularity` of its RRs, or with
    `context` > 0 of the RRs of the `context` samples that end with it (a stream's recent rhythm)."""
    samples, aami = np.asarray(samples, np.int64), np.asarray(aami)
    label = np.asarray(rhythm, dtype=object)[np.maximum(np.searchsorted(rhythm_at, samples, side="right") - 1, 0)] \
        if len(rhythm_at) else np.full(len(samples), "(N", dtype=object)
    fib = np.array([str(x).startswith(FIBRILLATION) for x in label], dtype=bool)
    out = []
    for start in range(0, int(samples[-1]) + 1 - window, hop) if len(samples) else ():
        lo, hi = np.searchsorted(samples, [start, start + window])
        if hi - lo < 4:
            continue
        seen = samples[np.searchsorted(samples, start + window - context):hi] if context else samples[lo:hi]
        irr = rr_irregularity(relative_rr(np.diff(seen)))
        out.append((bool(fib[lo:hi].any()), bool((aami[lo + 1:hi] == "S").any()), irr))
    return out


def irregularity_report(records: str = "DS1", thresholds: tuple[float, ...] = (0.05, 0.08, 0.12), window: int = 2000,
                        hop: int = 360, context: int = 0, data_dir=None) -> dict:
    """Share of windows whose irregularity exceeds each threshold (where `interval_rule.regular` would drop their S
    intervals), among windows in atrial fibrillation or flutter, other windows with an S beat, and the rest."""
    rows = []
    for name in (n for names in _groups(records).values() for n in names):
        beats = load_beats(name, data_dir)
        rows += window_irregularity(beats.samples, beats.aami(), *load_rhythms(name, data_dir), window, hop, context)
    fib, s, irr = (np.array(c) for c in zip(*rows)) if rows else (np.zeros(0, bool),) * 2 + (np.zeros(0),)
    groups = {"fibrillation": fib, "S_outside_fibrillation": s & ~fib, "other": ~s & ~fib}
    return {"records": records, "window": window, "hop": hop, "context": context,
            "windows": {g: int(m.sum()) for g, m in groups.items()},
            "over": {str(t): {g: float((irr[m] > t).mean()) if m.any() else None for g, m in groups.items()}
                     for t in thresholds}}
