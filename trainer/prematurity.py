"""How early the annotated S beats come against the RR around them: where a rule that reads prematurity can work.

`interval_rule.premature` and the rhythm fusion read an S beat as early against the window's median RR. That holds
when normal beats set the rhythm and fails where ectopic beats are most of the beats (their own RR is the median).
This measures it on the reference annotations alone, no model, so it says which records a timing rule can serve.
"""

from __future__ import annotations

import numpy as np

from stream_ecg.data.mitdb import DS1, DS2, load_beats


def rr_prev_relative(samples: np.ndarray, window: int) -> np.ndarray:
    """Per beat (from the second on): its preceding RR over the median of the RR intervals ending inside the
    `window` samples centred on it, minus 1 (how the rhythm channels paint a beat, but from the annotations)."""
    samples = np.asarray(samples, np.int64)
    rr, ends = np.diff(samples), samples[1:]
    lo = np.searchsorted(ends, ends - window // 2, side="left")
    hi = np.searchsorted(ends, ends + window // 2, side="left")
    return np.array([rr[k] / np.median(rr[a:b]) - 1.0 for k, (a, b) in enumerate(zip(lo, hi))])


def s_prematurity(samples: np.ndarray, aami: np.ndarray, window: int, premature: float) -> dict:
    """Beats, S beats, and the S beats whose preceding RR is at least `premature` shorter than the RR around them."""
    rel = rr_prev_relative(samples, window)
    s = np.asarray(aami)[1:] == "S"
    return {"beats": int(len(samples)), "S": int(s.sum() + (len(aami) > 0 and aami[0] == "S")),
            "S_early": int((rel[s] <= -premature).sum())}


def prematurity_report(records: str = "DS1,DS2", window: int = 2000, premature: float = 0.1, data_dir=None) -> dict:
    """Per record and pooled per database half: S share of the beats and share of S beats that come early."""
    groups = {part: list(DS1 if part == "DS1" else DS2 if part == "DS2" else (part,)) for part in records.split(",")}
    rows = {}
    for name in (n for names in groups.values() for n in names):
        beats = load_beats(name, data_dir)
        rows[name] = s_prematurity(beats.samples, beats.aami(), window, premature)
        rows[name]["S_share"] = rows[name]["S"] / max(rows[name]["beats"], 1)
        rows[name]["S_early_share"] = rows[name]["S_early"] / rows[name]["S"] if rows[name]["S"] else None
    pooled = {}
    for part, names in groups.items():
        s, early = sum(rows[n]["S"] for n in names), sum(rows[n]["S_early"] for n in names)
        pooled[part] = {"S": s, "S_early": early, "S_early_share": early / s if s else None}
    return {"window": window, "premature": premature, "records": rows, "pooled": pooled}
