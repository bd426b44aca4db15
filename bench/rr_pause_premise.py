"""Exploration (reported only): on DS1's annotations, how many S beats, and how many N and V beats, a premature test
marks when a beat followed by its pause counts as early too (`interval_rule.premature_pause`). Each annotated beat
with a beat after it and STREAM_REFERENCE_MIN_RR RRs in the STREAM_CONTEXT samples before it: early when its RR
before is at most 0.8 of the mean of those RRs (bedside-v9.5's `premature` 0.2 against the stream's 5-min mean), or,
with a pause share q, when its RR before is no longer than that mean (or, with a floor f, at most 1 - f of it) and
at most 1 - q of its RR after. Annotated R
peaks, no model, no detector and no S alarm: what the rule could add before the network's gates. DS1 only.

Usage: .venv/bin/python bench/rr_pause_premise.py > docs/results/rr_pause_premise.json
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rr_lda_premise import features  # noqa: E402  (the same beats and RR features, against the stream's mean)
from stream_ecg.data.mitdb import DS1  # noqa: E402

PREMATURE = 0.2
x, aami, rec, _ = features(DS1, "mean")
pre, ratio = x[:, 0], x[:, 2]  # RR before over the 5-min mean; RR before over RR after


def counts(early: np.ndarray) -> dict:
    s = aami == "S"
    return {"S": int((early & s).sum()), "N": int((early & (aami == "N")).sum()), "V": int((early & (aami == "V")).sum()),
            "S_by_record": {r: int((early & s & (rec == r)).sum()) for r in sorted(set(rec[s]))}}


report = {"S_beats": int((aami == "S").sum()), "premature": PREMATURE, "rules": {"premature only": counts(pre <= 1 - PREMATURE)}}
for q in (0.15, 0.2, 0.25, 0.3):
    report["rules"][f"premature_pause {q}"] = counts((pre <= 1 - PREMATURE) | ((pre <= 1.0) & (ratio <= 1 - q)))
for q, floor in ((0.2, 0.05), (0.2, 0.1), (0.15, 0.1)):  # premature_pause_early: the pause beat at least this early
    report["rules"][f"premature_pause {q}, premature_pause_early {floor}"] = counts(
        (pre <= 1 - PREMATURE) | ((pre <= 1.0 - floor) & (ratio <= 1 - q)))
print(json.dumps(report, indent=1))
