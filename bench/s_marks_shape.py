"""Exploration (reported only): the shape of the beats an S-marking rule marks, out of fold on DS1, by their class.

An S beat is supraventricular: its QRS is the patient's usual one. For each S interval a card publishes in a window
(before any merging across windows) this reads the residual channel (the beat minus the window's median beat,
`stream_ecg.morphology.beat_residual`) as `interval_rule.distinct` reads it (`qrs_residual`: RMS over R +- 36 samples) at the
interval's centre, and names the annotated beat there (within EC57's 150 ms; "none" if no beat). So it says how many
right and wrong S marks a shape test would keep at each threshold. The card's own rules run unchanged
(`label_intervals` is wrapped, not altered); a JSON rule on the command line overrides the card's interval rule.

Usage: .venv/bin/python bench/s_marks_shape.py RUN CARD [stream] ['{"premature": 0.2, "premature_all": true}']
       e.g. runs/v9_stream40 edge_models/bedside-v9.2 stream '{...}' (runs/v9_stream40: `trainer fuse --reference stream`)
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
from stream_ecg.intervals import IntervalRule, qrs_residual  # noqa: E402
from stream_ecg.postprocess import label_intervals  # noqa: E402
import trainer.validation as validation  # noqa: E402

THRESHOLDS = (0.4, 0.6, 0.8, 1.0, 1.2)

card = load_card(Path(sys.argv[2]))
if len(sys.argv) > 3 and sys.argv[3]:
    card = dataclasses.replace(card, prematurity_reference=sys.argv[3])
if len(sys.argv) > 4:
    card = dataclasses.replace(card, interval_rule=IntervalRule.from_dict({**card.interval_rule.to_dict(),
                                                                           **json.loads(sys.argv[4])}))
card.validate()
if "S" in card.class_rules:  # S labelled under another card's rule: read that card instead
    sys.exit(f"{card.name} labels S under class_rules; run this script on the card its S rule comes from")
tol = int(round(EC57_TOL_S * card.fs))
marks: list[list[tuple[int, int, float]]] = []  # per record: (window index, centre in the window, residual RMS)
offsets: list[int] = []  # per record: windows labelled so far (run_record labels a record's windows in batches)


def recording(c, infer, x, probs, attention, **kw):
    """The runtime's labelling, unchanged, with each S mark's residual RMS kept beside it."""
    out = label_intervals(c, infer, x, probs, attention, **kw)
    if "S" not in (kw.get("classes") or ("S",)):  # label_windows labelling another class under its own rule
        return out
    base = offsets[-1]
    offsets[-1] += len(x)
    for i in range(len(x)):
        for iv in out[i]:
            if iv.label == "S":
                r = (iv.start + iv.end) // 2
                marks[-1].append((base + i, r, qrs_residual(x[i, c.channels - 1], r)))
    return out


real_run_record = offline.run_record


def run_record(model, rec, *a, **kw):
    marks.append([])
    offsets.append(0)
    return real_run_record(model, rec, *a, **kw)


postprocess.label_intervals = recording  # label_windows, which run_record calls, calls it by this name
validation.run_record = run_record  # held_out_outputs calls it by this name
outs = validation.held_out_outputs(Path(sys.argv[1]), card)

rows = []  # (record, class of the beat marked, residual RMS)
for o, ms in zip(outs, marks):
    for i, r, rms in ms:
        d = np.abs(o.beat_samples - (int(o.starts[i]) + r))
        k = int(np.argmin(d)) if len(d) else -1
        rows.append((o.name, str(o.beat_aami[k]) if k >= 0 and d[k] <= tol else "none", rms))

classes = sorted({c for _, c, _ in rows})
report = {"run": sys.argv[1], "card": card.name, "interval_rule": card.interval_rule.to_dict(),
          "prematurity_reference": card.prematurity_reference, "window_marks": Counter(c for _, c, _ in rows),
          "median_rms": {c: float(np.median([v for _, k, v in rows if k == c])) for c in classes},
          "kept_below": {str(t): {c: sum(1 for _, k, v in rows if k == c and v < t) for c in classes} for t in THRESHOLDS},
          "by_record": {}}
for name in sorted({n for n, _, _ in rows}):
    mine = [(k, v) for n, k, v in rows if n == name]
    report["by_record"][name] = {"S": sum(1 for k, _ in mine if k == "S"), "other": sum(1 for k, _ in mine if k != "S"),
                                 **{f"below_{t}": {"S": sum(1 for k, v in mine if k == "S" and v < t),
                                                   "other": sum(1 for k, v in mine if k != "S" and v < t)}
                                    for t in (0.6, 0.8, 1.0)}}
print(json.dumps(report, indent=1))
