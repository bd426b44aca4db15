"""Exploration (reported only): how many successive windows light each published interval of bedside-v9.1, out of
fold on DS1, and where in its first window does each lie?

Each beat sits in about five overlapping windows (5.6 s windows, 1 s hop). `IntervalMerger` publishes a beat's
interval from the first window that lights it and folds the later re-detections into it; this counts them. If false
intervals were mostly lit once and right ones many times, publishing only on a second window's confirmation would
raise +P, at up to one hop of extra alarm latency.

Usage: .venv/bin/python bench/persistence_premise.py runs/v9   (runs/v9 from `trainer unpack --model edge_models/bedside-v9`)
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import stream_ecg.offline as offline  # noqa: E402
from stream_ecg.card import load_card  # noqa: E402
from stream_ecg.evaluation import EC57_TOL_S  # noqa: E402
from stream_ecg.postprocess import IntervalMerger  # noqa: E402
from trainer.validation import held_out_outputs  # noqa: E402


class RecordingMerger(IntervalMerger):
    """The runtime's merger, unchanged, that keeps each published interval's memory entry, whose `windows` goes on
    counting the windows that light the beat after it was published."""

    made: list["RecordingMerger"] = []  # in creation order: one per record, as held_out_outputs runs them

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entry = {}  # (label, published start) -> the merger's entry for that beat
        RecordingMerger.made.append(self)

    def add(self, intervals):
        new = super().add(intervals)
        for iv in new:
            self.entry[iv.label, iv.start] = next(
                m for m in self.seen if m.published and (m.label, m.start, m.end) == (iv.label, iv.start, iv.end))
        return new


offline.IntervalMerger = RecordingMerger  # run_record builds its merger by this name
card = load_card(Path("edge_models/bedside-v9.1"))  # the default's rules on bedside-v9's files
outs = held_out_outputs(Path(sys.argv[1]), card)
tol = int(round(EC57_TOL_S * card.fs))
rows = []
for o, merger in zip(outs, RecordingMerger.made):
    for iv, first in zip(o.intervals, o.first_seen):  # confirmed as beat_counts confirms: a beat of its class within tol
        pos = o.beat_samples[o.beat_aami == iv.label]
        rows.append((o.name, iv.label, bool(np.any((pos >= iv.start - tol) & (pos < iv.end + tol))),
                     merger.entry[iv.label, iv.start].windows,
                     iv.score,  # the score of the window that first lit it
                     (iv.start + iv.end) / 2 - first))  # where its centre lies in that window

for c in ("V", "S"):
    ok = np.array([r[3] for r in rows if r[1] == c and r[2]])
    bad = np.array([r[3] for r in rows if r[1] == c and not r[2]])
    print(c, "confirmed", len(ok), "false", len(bad))
    for k in range(1, int(max(ok.max(), bad.max())) + 1):
        print(f"  lit by {k} window(s): confirmed {np.sum(ok == k)}, false {np.sum(bad == k)}")
    ok_s = np.array([r[4] for r in rows if r[1] == c and r[2]])
    bad_s = np.array([r[4] for r in rows if r[1] == c and not r[2]])
    for t in (0.5, 0.7, 0.8, 0.9, 0.95):  # kept if a second window lights it, or its first window's score is at least t
        k_ok, k_bad = (ok >= 2) | (ok_s >= t), (bad >= 2) | (bad_s >= t)
        print(f"  second window or first score >= {t}: confirmed kept {k_ok.sum()} (at once {np.sum(ok_s >= t)}), "
              f"false kept {k_bad.sum()}, +P {k_ok.sum() / max(1, k_ok.sum() + k_bad.sum()):.3f}")
    ok_at = np.array([r[5] for r in rows if r[1] == c and r[2]])  # the left_edge exploration
    bad_at = np.array([r[5] for r in rows if r[1] == c and not r[2]])
    edges = (0, 400, 800, 1200, 1600, 1700, 1800, 1900, card.window)
    for a, b in zip(edges[:-1], edges[1:]):
        sel_ok, sel_bad = (ok_at >= a) & (ok_at < b), (bad_at >= a) & (bad_at < b)
        print(f"  centre at samples [{a}, {b}) of its first window: confirmed {sel_ok.sum()} (lit once "
              f"{np.sum(sel_ok & (ok == 1))}), false {sel_bad.sum()} (lit once {np.sum(sel_bad & (bad == 1))})")
    for rec in sorted({r[0] for r in rows}):
        b = [r[3] for r in rows if r[0] == rec and r[1] == c and not r[2]]
        g = [r[3] for r in rows if r[0] == rec and r[1] == c and r[2]]
        if len(b) > 15:
            print("   ", rec, "false", len(b), "lit once", sum(x == 1 for x in b), "| confirmed", len(g), "lit once", sum(x == 1 for x in g))
