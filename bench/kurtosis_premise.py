"""Exploration (reported only): do the false V / S intervals of a cross-fitted run, out of fold on DS1 with
bedside-v9's card, sit in windows whose first lead has a low kurtosis (a noise / signal-quality measure)?

Usage: .venv/bin/python bench/kurtosis_premise.py runs/v9   (runs/v9 from `trainer unpack --model edge_models/bedside-v9`)
"""
import sys
import numpy as np
from scipy.stats import kurtosis
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stream_ecg.card import load_card
from stream_ecg.data import load_record
from stream_ecg.offline import model_input
from trainer.validation import held_out_outputs

card = load_card(Path("edge_models/bedside-v9"))
outs = held_out_outputs(Path(sys.argv[1]), card)
tol = 54
rows = []
for o in outs:
    rec = load_record(o.name)
    sig, _ = model_input(card.leads, card.dsp, rec)
    k = {int(s): float(kurtosis(sig[0, s:s + card.window], fisher=False)) for s in o.starts}
    for iv, f in zip(o.intervals, o.first_seen):
        pos = o.beat_samples[o.beat_aami == iv.label]
        ok = bool(np.any((pos >= iv.start - tol) & (pos < iv.end + tol)))
        rows.append((o.name, iv.label, ok, k[int(f)]))
    for c in ("V", "S"):
        for b in o.beat_samples[o.beat_aami == c]:
            s = o.starts[(o.starts <= b - 72) & (o.starts + card.window > b + 72)]
            if len(s):
                rows.append((o.name, c + "beat", None, float(np.median([k[int(x)] for x in s]))))

for c in ("V", "S"):
    ok = np.array([r[3] for r in rows if r[1] == c and r[2]]); bad = np.array([r[3] for r in rows if r[1] == c and r[2] is False])
    beats = np.array([r[3] for r in rows if r[1] == c + "beat"])
    print(c, "confirmed", len(ok), np.percentile(ok, [5, 25, 50]).round(2), "false", len(bad), np.percentile(bad, [5, 25, 50]).round(2))
    for q in (3, 3.5, 4, 5, 6, 8):
        print(f"  k<{q}: false removed {np.mean(bad < q):.3f} ({int(np.sum(bad < q))}), confirmed removed {np.mean(ok < q):.3f} ({int(np.sum(ok < q))}), beats in such windows {np.mean(beats < q):.3f}")
    for rec in sorted({r[0] for r in rows}):
        b = [r[3] for r in rows if r[0] == rec and r[1] == c and r[2] is False]
        g = [r[3] for r in rows if r[0] == rec and r[1] == c and r[2]]
        if len(b) > 20:
            print("   ", rec, "false", len(b), "median k %.1f" % np.median(b), "| confirmed", len(g), "median k %.1f" % (np.median(g) if g else np.nan))
