"""Exploration (reported only): does the stretch where a P wave sits tell atrial fibrillation from a rhythm with
early S beats, window by window? For DS1 windows of the runtime's size every 1000 samples, on the first lead as the
model sees it (bedside-v9.5's lead contract, DSP and z-score; R peaks by its detector), this takes
`stream_ecg.morphology.p_wave_consistency` and `intervals.rr_irregularity` (the `regular` gate's measure), and
splits the windows by the annotations: in atrial fibrillation or flutter (rhythm at the window's centre), not so but
holding an S beat, and the rest. Reports the share of each below a few consistency levels, and per record for the
windows the `regular` gate (0.05) lets through; also, for those windows, the mean of the measure over the card's leads
(`interval_rule.p_wave_leads` "mean"; MLII and the chest lead). DS1 only.

Usage: .venv/bin/python bench/p_wave_premise.py > docs/results/p_wave_premise.json
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stream_ecg.card import load_card  # noqa: E402
from stream_ecg.data.mitdb import DS1, load_beats, load_record, load_rhythms  # noqa: E402
from stream_ecg.dsp import normalise_window  # noqa: E402
from stream_ecg.intervals import rr_irregularity  # noqa: E402
from stream_ecg.morphology import p_wave_consistency  # noqa: E402
from stream_ecg.offline import model_input  # noqa: E402
from stream_ecg.rhythm import r_peaks, relative_rr  # noqa: E402
from trainer.prematurity import FIBRILLATION  # noqa: E402

LEVELS, HOP = (0.3, 0.4, 0.5), 1000
card = load_card(Path("edge_models/bedside-v9.5"))
rows = []  # (record, group, consistency, irregularity)
for name in DS1:
    sig, _ = model_input(card.leads, card.dsp, load_record(name))
    beats = load_beats(name)
    s, aami = np.asarray(beats.samples), np.asarray(beats.aami())
    rhythm_at, rhythm = load_rhythms(name)
    for start in range(0, sig.shape[1] - card.window + 1, HOP):
        leads = normalise_window(sig[:, start : start + card.window], card.dsp.norm_eps)
        lead = leads[0]
        peaks = r_peaks(lead, card.fs, card.dsp.peak_detector)
        c = p_wave_consistency(lead, card.fs, peaks)
        if not np.isfinite(c):
            continue
        both = float(np.nanmean([p_wave_consistency(x, card.fs, peaks) for x in leads]))  # as p_wave_leads "mean"
        lo, hi = np.searchsorted(s, [start, start + card.window])
        at = np.searchsorted(rhythm_at, start + card.window // 2, side="right") - 1
        fib = len(rhythm_at) > 0 and at >= 0 and str(rhythm[at]).startswith(FIBRILLATION)
        group = "fibrillation" if fib else "S beat" if (aami[lo:hi] == "S").any() else "rest"
        rows.append((name, group, c, rr_irregularity(relative_rr(np.diff(peaks))), both))


def shares(sel: list, at: int = 2) -> dict:
    c = np.array([r[at] for r in sel])
    return {"windows": len(sel), **{f"below_{lv}": int((c < lv).sum()) for lv in LEVELS},
            "median": float(np.median(c)) if len(c) else None}


report = {"hop": HOP, "levels": LEVELS, "all": {}, "regular_gate_open": {}, "by_record_regular_gate_open": defaultdict(dict)}
for group in ("fibrillation", "S beat", "rest"):
    mine = [r for r in rows if r[1] == group]
    report["all"][group] = shares(mine)
    report["regular_gate_open"][group] = shares([r for r in mine if r[3] <= 0.05])
    report.setdefault("regular_gate_open_mean_of_leads", {})[group] = shares([r for r in mine if r[3] <= 0.05], at=4)
    if group != "rest":
        for name in sorted({r[0] for r in mine}):
            report["by_record_regular_gate_open"][name][group] = shares([r for r in mine if r[0] == name and r[3] <= 0.05])
print(json.dumps(report, indent=1))
