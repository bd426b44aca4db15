"""Exploration (reported only): where, on the way to a published S interval, each DS1 S beat is lost, out of fold.

Each beat sits in about five overlapping windows. For every annotated S beat this takes the windows that hold it past
the card's `left_edge` and reports the furthest step it reached in any of them, in the order the runtime applies
them: the window's S probability alarms; the R-peak detector finds the beat (a peak within EC57's 150 ms); its RR is
at least `premature` short against the card's reference (`premature_beats`, as the rule judges it); the window's
`regular` gate is open; its `min_kurtosis` gate is open; its `min_p_consistency` gate is open; a published S interval
of that window covers it (within 150 ms). The card's own rules run unchanged (`stream_ecg.postprocess.label_intervals` is wrapped, not altered), so the last step is what
the runtime published from those windows.

Usage: .venv/bin/python bench/s_funnel.py runs/v9 [edge_models/bedside-v9.2 [stream]]
       (runs/v9 from `trainer unpack --model edge_models/bedside-v9`; a third argument sets the card's
       prematurity_reference, e.g. "stream", for a rule under test)
"""
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import stream_ecg.offline as offline  # noqa: E402
import stream_ecg.postprocess as postprocess  # noqa: E402
from stream_ecg.card import load_card  # noqa: E402
from stream_ecg.evaluation import EC57_TOL_S  # noqa: E402
from stream_ecg.intervals import premature_beats, rr_irregularity  # noqa: E402
from stream_ecg.postprocess import _p_consistency, label_intervals, window_alarms  # noqa: E402
from stream_ecg.quality import kurtosis_sqi  # noqa: E402
from stream_ecg.rhythm import r_peaks  # noqa: E402
import trainer.validation as validation  # noqa: E402

STEPS = ("no S alarm", "no R peak", "not early", "regular gate", "kurtosis gate", "p-wave gate", "not marked", "marked")

card = load_card(Path(sys.argv[2] if len(sys.argv) > 2 else "edge_models/bedside-v9.2"))
if len(sys.argv) > 3:
    card = dataclasses.replace(card, prematurity_reference=sys.argv[3])
    card.validate()
if "S" in card.class_rules:  # S labelled under another card's rule: read that card instead
    sys.exit(f"{card.name} labels S under class_rules; run this script on the card its S rule comes from")
rule, s_col = card.interval_rule, card.abnormal.index("S")
rr_at, tol = len(card.leads.leads), int(round(EC57_TOL_S * card.fs))
windows: list[list[dict]] = []  # per record (run_record is called once per record, in order), its windows in order


def recording(c, infer, x, probs, attention, **kw):
    """The runtime's labelling, unchanged, with what each window's S steps saw kept beside it."""
    out = label_intervals(c, infer, x, probs, attention, **kw)
    if "S" not in (kw.get("classes") or ("S",)):  # label_windows labelling another class under its own rule
        return out
    alarm, refs = window_alarms(c, probs)[:, s_col], kw.get("rr_reference")
    for i in range(len(x)):
        peaks = r_peaks(x[i, 0], c.fs, c.dsp.peak_detector)
        rel = x[i, rr_at][peaks]
        early, _ = premature_beats(peaks, x[i, rr_at], rule.premature, c.prematurity_reference,
                                   None if refs is None else float(refs[i]), rule.premature_pause,
                                   rule.premature_pause_early)  # as the rule judges it
        windows[-1].append({
            "alarm": bool(alarm[i]), "peaks": peaks, "early": early,
            "regular": not (rule.regular > 0 and rr_irregularity(rel) > rule.regular),
            "kurtosis": not (rule.min_kurtosis > 0 and not kurtosis_sqi(x[i, 0]) >= rule.min_kurtosis),
            "p_wave": not (rule.min_p_consistency > 0
                           and _p_consistency(c, x[i], peaks) < rule.min_p_consistency),  # as the card reads it
            "marked": [(iv.start, iv.end) for iv in out[i] if iv.label == "S"]})
    return out


real_run_record = offline.run_record


def run_record(model, rec, *a, **kw):
    windows.append([])
    return real_run_record(model, rec, *a, **kw)


postprocess.label_intervals = recording  # label_windows, which run_record calls, calls it by this name
validation.run_record = run_record  # held_out_outputs calls it by this name
outs = validation.held_out_outputs(Path(sys.argv[1]), card)

reached, by_record = Counter(), {}
for o, wins in zip(outs, windows):
    mine = Counter()
    for b in o.beat_samples[o.beat_aami == "S"]:
        step = 0
        for start, w in zip(o.starts, wins):
            r = int(b - start)
            if not rule.left_edge <= r < card.window:
                continue
            near = lambda p: bool(np.any(np.abs(np.asarray(p) - r) <= tol))  # noqa: E731
            k = 0
            if w["alarm"]:
                k = 1
                if near(w["peaks"]):
                    k = 2
                    if near(w["early"]) or not rule.premature:
                        k = 3
                        if w["regular"]:
                            k = 4
                            if w["kurtosis"]:
                                k = 5
                                if w["p_wave"]:
                                    k = 6
                                    if any(s - tol <= r < e + tol for s, e in w["marked"]):
                                        k = 7
            step = max(step, k)
        mine[STEPS[step]] += 1
    reached.update(mine)
    if mine:
        by_record[o.name] = dict(mine)

total = sum(reached.values())
print(json.dumps({"run": sys.argv[1], "card": card.name, "S_beats": total,
                  "furthest_step": {s: reached[s] for s in STEPS}, "by_record": by_record}, indent=1))
