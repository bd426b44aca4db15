"""Exploration (reported only, DS1 alone): could RR timing mark S beats without the network's S alarm? The RR
discriminant of `rr_lda_premise.py` (four RR features against the mean of the stream's last 5 min, equal priors) is
fitted on DS1 leaving each record out in turn and scored on that record's annotated beats; each false call is counted
by its beat's AAMI class and by the rhythm annotation in force (MIT-BIH's "(AFIB", "(N", ...). V calls are what a
shape test removes and fibrillation or flutter calls what the P-wave gate removes; N beats called S in sinus rhythm
are what neither removes. Annotated R peaks, no model and no detector.

Usage: .venv/bin/python bench/rr_lda_rhythm.py > docs/results/rr_lda_rhythm.json
"""
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import wfdb
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rr_lda_premise import features  # noqa: E402
from stream_ecg.data.locate import mitdb_dir  # noqa: E402
from stream_ecg.data.mitdb import DS1  # noqa: E402


def rhythm_at(name: str, samples: np.ndarray) -> np.ndarray:
    """The rhythm annotation in force at each sample of a record ("?" before the first)."""
    ann = wfdb.rdann(str(mitdb_dir() / name), "atr")
    marks = [(int(s), a.strip("\x00")) for s, a in zip(ann.sample, ann.aux_note) if a.startswith("(")]
    starts = np.array([s for s, _ in marks], dtype=np.int64)
    labels = np.array([a for _, a in marks] or ["?"])
    j = np.searchsorted(starts, samples, side="right") - 1
    return np.where(j >= 0, labels[np.maximum(j, 0)], "?")


def main() -> None:
    x, y, rec, at = features(DS1, "mean")
    rhythm = np.concatenate([rhythm_at(r, at[rec == r]) for r in DS1])  # features lists beats record by record
    called = np.zeros(len(y), dtype=bool)
    for held in DS1:
        train = (rec != held) & np.isin(y, ["N", "S"])
        lda = LinearDiscriminantAnalysis(priors=[0.5, 0.5]).fit(x[train], y[train] == "S")
        called[rec == held] = lda.predict_proba(x[rec == held])[:, 1] >= 0.5
    s, false = y == "S", called & (y != "S")
    n_sinus = false & (y == "N") & (rhythm == "(N")
    print(json.dumps({
        "S_beats": int(s.sum()), "found": int((called & s).sum()), "called": int(called.sum()),
        "se": float((called & s).sum() / s.sum()), "ppv": float((called & s).sum() / called.sum()),
        "false_by_beat_class": dict(Counter(y[false].tolist()).most_common()),
        "false_N_by_rhythm": dict(Counter(rhythm[false & (y == "N")].tolist()).most_common()),
        "found_by_rhythm": dict(Counter(rhythm[called & s].tolist()).most_common()),
        "ppv_if_V_and_fibrillation_calls_removed": float((called & s).sum() / (
            (called & s).sum() + (false & (y != "V") & ~np.isin(rhythm, ["(AFIB", "(AFL"])).sum())),
        "N_false_in_sinus_rhythm": int(n_sinus.sum()),
        "N_false_in_sinus_rhythm_by_record": dict(Counter(rec[n_sinus].tolist()).most_common()),
    }, indent=1))


if __name__ == "__main__":
    main()
