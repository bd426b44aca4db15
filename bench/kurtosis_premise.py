"""Exploration (reported only): do the false V / S intervals of a cross-fitted run, out of fold on DS1 with
bedside-v9's card, sit in windows whose first lead has a low kurtosis (a noise / signal-quality measure)?

The kurtosis is `stream_ecg.quality.kurtosis_sqi`, the measure `interval_rule.min_kurtosis` gates on, of the same
preprocessed lead the model reads (scale-free, so the per-window z-score leaves it unchanged).

Usage: .venv/bin/python bench/kurtosis_premise.py runs/v9   (runs/v9 from `trainer unpack --model edge_models/bedside-v9`)
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stream_ecg.card import load_card  # noqa: E402
from stream_ecg.data import load_record  # noqa: E402
from stream_ecg.evaluation import EC57_TOL_S  # noqa: E402
from stream_ecg.offline import model_input  # noqa: E402
from stream_ecg.quality import kurtosis_sqi  # noqa: E402
from trainer.bedside import BedsideConfig  # noqa: E402
from trainer.validation import held_out_outputs  # noqa: E402

card = load_card(Path("edge_models/bedside-v9"))
outs = held_out_outputs(Path(sys.argv[1]), card)
tol, margin = int(round(EC57_TOL_S * card.fs)), BedsideConfig.margin
rows = []
for o in outs:
    sig, _ = model_input(card.leads, card.dsp, load_record(o.name))
    k = {int(s): kurtosis_sqi(sig[0, s:s + card.window]) for s in o.starts}
    for iv, f in zip(o.intervals, o.first_seen):  # confirmed as beat_counts confirms: a beat of its class within tol
        pos = o.beat_samples[o.beat_aami == iv.label]
        rows.append((o.name, iv.label, bool(np.any((pos >= iv.start - tol) & (pos < iv.end + tol))), k[int(f)]))
    for c in ("V", "S"):  # each annotated beat: the median kurtosis of the windows holding it away from their edges
        for b in o.beat_samples[o.beat_aami == c]:
            s = o.starts[(o.starts <= b - margin) & (o.starts + card.window > b + margin)]
            if len(s):
                rows.append((o.name, c + "beat", None, float(np.median([k[int(x)] for x in s]))))

for c in ("V", "S"):
    ok = np.array([r[3] for r in rows if r[1] == c and r[2]])
    bad = np.array([r[3] for r in rows if r[1] == c and r[2] is False])
    beats = np.array([r[3] for r in rows if r[1] == c + "beat"])
    print(c, "confirmed", len(ok), np.percentile(ok, [5, 25, 50]).round(2), "false", len(bad), np.percentile(bad, [5, 25, 50]).round(2))
    for q in (3, 3.5, 4, 5, 6, 8):
        print(f"  k<{q}: false removed {np.mean(bad < q):.3f} ({int(np.sum(bad < q))}), confirmed removed {np.mean(ok < q):.3f} "
              f"({int(np.sum(ok < q))}), beats in such windows {np.mean(beats < q):.3f}")
    for rec in sorted({r[0] for r in rows}):
        b = [r[3] for r in rows if r[0] == rec and r[1] == c and r[2] is False]
        g = [r[3] for r in rows if r[0] == rec and r[1] == c and r[2]]
        if len(b) > 20:
            print("   ", rec, "false", len(b), "median k %.1f" % np.median(b), "| confirmed", len(g),
                  "median k %.1f" % (np.median(g) if g else np.nan))
