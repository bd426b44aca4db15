"""Exploration (reported only): how far RR timing alone goes for S beats across patients, and what its reference RR
does to that. de Chazal et al. 2004, the issue's comparison, normalise each beat's RR by the average RR of the five
minutes around it. This fits a two-class linear discriminant (N vs S, equal priors; scikit-learn) on DS1's annotated
beats with four RR features, each beat's RR before and after over the `centre` ("mean" or "median") of the RRs of the
five minutes before it (causal, as a live stream knows them), RR before over RR after, and RR before over the mean of
the ten RRs before it, and scores every annotated beat of DS2. Annotated R peaks, no model and no detector: an upper
bound on what timing can give, not a result of the product.

Usage: .venv/bin/python bench/rr_lda_premise.py > docs/results/rr_lda_premise.json
"""
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stream_ecg.data.mitdb import DS1, DS2, load_beats  # noqa: E402
from stream_ecg.rhythm import STREAM_CONTEXT, STREAM_REFERENCE_MIN_RR  # noqa: E402


def features(names, centre: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per annotated beat with a beat after it and STREAM_REFERENCE_MIN_RR RRs in the STREAM_CONTEXT samples before it:
    (pre / centre, post / centre, pre / post, pre / mean of the last ten), its AAMI class, its record and its sample."""
    pick = np.mean if centre == "mean" else np.median
    x, y, rec, at = [], [], [], []
    for name in names:
        beats = load_beats(name)
        s, aami = np.asarray(beats.samples, np.int64), np.asarray(beats.aami())
        rr = np.diff(s).astype(float)
        for k in range(1, len(s) - 1):
            seen = rr[max(np.searchsorted(s, s[k] - STREAM_CONTEXT), 0) : k - 1]  # RRs ending before this beat's own
            if len(seen) < STREAM_REFERENCE_MIN_RR:
                continue
            pre, post, ref = rr[k - 1], rr[k], pick(seen)
            x.append([pre / ref, post / ref, pre / post, pre / np.mean(seen[-10:])])
            y.append(aami[k])
            rec.append(name)
            at.append(int(s[k]))
    return np.array(x), np.array(y), np.array(rec), np.array(at, dtype=np.int64)


def main() -> None:
    report = {"context_samples": STREAM_CONTEXT, "centres": {}}
    for centre in ("median", "mean"):
        x1, y1, _, _ = features(DS1, centre)
        x2, y2, r2, _ = features(DS2, centre)
        train = np.isin(y1, ["N", "S"])
        lda = LinearDiscriminantAnalysis(priors=[0.5, 0.5]).fit(x1[train], y1[train] == "S")
        rows = {}
        for part, x, y, rec in (("DS1_in_sample", x1, y1, None), ("DS2", x2, y2, r2)):
            called = lda.predict_proba(x)[:, 1] >= 0.5
            s = y == "S"
            row = {"S_beats": int(s.sum()), "se": float((called & s).sum() / s.sum()),
                   "ppv": float((called & s).sum() / max(called.sum(), 1)),
                   "ppv_among_N_and_S": float((called & s).sum() / max((called & np.isin(y, ["N", "S"])).sum(), 1))}
            if rec is not None:
                in232 = s & (rec == "232")
                row["se_232"] = float((called & in232).sum() / in232.sum())
                row["se_without_232"] = float((called & s & ~in232).sum() / (s & ~in232).sum())
            rows[part] = row
        report["centres"][centre] = rows
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
