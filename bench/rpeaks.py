"""Accuracy of the rhythm channels' R-peak detector (stream_ecg.rhythm.r_peaks) against MIT-BIH beat annotations.

Windows are cut as the runtime cuts them (the card's lead contract and DSP, z-scored); every
`--every`-th window is scored. A detection matches an annotated beat within 150 ms (EC57); beats
and detections in the first and last 30 samples of a window are not scored (half a QRS is visible).

    .venv/bin/python bench/rpeaks.py                 # DS1
    .venv/bin/python bench/rpeaks.py --records DS2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stream_ecg.card import ModelCard, default_model_dir, load_card
from stream_ecg.data import load_record
from stream_ecg.data.mitdb import DS1, DS2
from stream_ecg.dsp import normalise_window
from stream_ecg.offline import model_input, window_starts
from stream_ecg.rhythm import r_peaks

TOL = 54  # 150 ms at 360 Hz
EDGE = 30


def score_record(card: ModelCard, name: str, every: int) -> tuple[int, int, int, float, int]:
    rec = load_record(name)
    sig, _ = model_input(card.leads, card.dsp, rec)
    beats = np.round(rec.beats.samples * card.fs / rec.fs).astype(np.int64)
    tp = fn = fp = 0
    seconds, n = 0.0, 0
    for s in window_starts(sig.shape[1], card.window, card.hop)[::every]:
        w = normalise_window(sig[:, s : s + card.window], card.dsp.norm_eps)[0]
        t0 = time.perf_counter()
        found = r_peaks(w, card.fs)
        seconds, n = seconds + time.perf_counter() - t0, n + 1
        ann = beats[(beats >= s + EDGE) & (beats < s + card.window - EDGE)] - s
        inner = found[(found >= EDGE) & (found < card.window - EDGE)]
        hit = np.array([np.any(np.abs(found - b) <= TOL) for b in ann], bool)
        real = np.array([np.any(np.abs(beats - s - d) <= TOL) for d in inner], bool)
        tp, fn, fp = tp + int(hit.sum()), fn + int((~hit).sum()), fp + int((~real).sum())
    return tp, fn, fp, seconds, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default="DS1", help="DS1, DS2 or comma-separated record names")
    ap.add_argument("--every", type=int, default=5, help="score every n-th window")
    args = ap.parse_args()
    names = DS1 if args.records == "DS1" else DS2 if args.records == "DS2" else tuple(args.records.split(","))
    card = load_card(default_model_dir(), verify_files=False)
    total = np.zeros(3, dtype=np.int64)
    seconds, windows = 0.0, 0
    for name in names:
        tp, fn, fp, sec, n = score_record(card, name, args.every)
        total += (tp, fn, fp)
        seconds, windows = seconds + sec, windows + n
        print(f"{name}: Se {tp / max(tp + fn, 1):.4f} +P {tp / max(tp + fp, 1):.4f}")
    tp, fn, fp = total
    print(f"all ({args.records}): Se {tp / (tp + fn):.4f} +P {tp / (tp + fp):.4f}; {1000 * seconds / windows:.2f} ms per window")


if __name__ == "__main__":
    main()
