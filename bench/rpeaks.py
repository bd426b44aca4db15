"""Accuracy of the rhythm channels' R-peak detector (stream_ecg.rhythm.r_peaks) against MIT-BIH beat annotations.

Windows are cut as the runtime cuts them (the card's lead contract and DSP, z-scored); every
`--every`-th window is scored. A detection matches an annotated beat within 150 ms (EC57); beats
and detections in the first and last 30 samples of a window are not scored (half a QRS is visible).

    .venv/bin/python bench/rpeaks.py                 # DS1, the default model's detector
    .venv/bin/python bench/rpeaks.py --records DS2 --detector energy_t
    .venv/bin/python bench/rpeaks.py --grid          # energy_t's settings on DS1: fewest extra + missed peaks
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time
from typing import Callable

import numpy as np

from stream_ecg.card import ModelCard, default_model_dir, load_card
from stream_ecg.data import load_record
from stream_ecg.data.mitdb import DS1, DS2
from stream_ecg.dsp import normalise_window
from stream_ecg.offline import model_input, window_starts
from stream_ecg.rhythm import PEAK_DETECTORS, energy_t_peaks, r_peaks

TOL = 54  # 150 ms at 360 Hz
EDGE = 30
GRID_PERCENTILES = (80, 85, 90, 95, 100)
GRID_SHARES = (0.08, 0.1, 0.15, 0.2, 0.25)

Detector = Callable[[np.ndarray, float], np.ndarray]


def score_record(card: ModelCard, name: str, every: int, detectors: dict[str, Detector]) -> dict[str, tuple[int, int, int, float, int]]:
    """Per detector: (matched beats, missed beats, extra detections, seconds spent detecting, windows)."""
    rec = load_record(name)
    sig, _ = model_input(card.leads, card.dsp, rec)
    beats = np.round(rec.beats.samples * card.fs / rec.fs).astype(np.int64)
    out = {}
    starts = window_starts(sig.shape[1], card.window, card.hop)[::every]
    windows = [normalise_window(sig[:, s : s + card.window], card.dsp.norm_eps)[0] for s in starts]
    for label, detect in detectors.items():
        tp = fn = fp = 0
        seconds = 0.0
        for s, w in zip(starts, windows):
            t0 = time.perf_counter()
            found = detect(w, card.fs)
            seconds += time.perf_counter() - t0
            ann = beats[(beats >= s + EDGE) & (beats < s + card.window - EDGE)] - s
            inner = found[(found >= EDGE) & (found < card.window - EDGE)]
            hit = np.array([np.any(np.abs(found - b) <= TOL) for b in ann], bool)
            real = np.array([np.any(np.abs(beats - s - d) <= TOL) for d in inner], bool)
            tp, fn, fp = tp + int(hit.sum()), fn + int((~hit).sum()), fp + int((~real).sum())
        out[label] = (tp, fn, fp, seconds, len(starts))
    return out


def grid() -> dict[str, Detector]:
    """energy_t's settings to choose from: percentile x share, with and without the T-wave test."""
    return {f"p{p}_s{s}{'_t' if t else ''}": functools.partial(energy_t_peaks, percentile=p, share=s, t_wave=t)
            for p, s, t in itertools.product(GRID_PERCENTILES, GRID_SHARES, (True, False))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default="DS1", help="DS1, DS2 or comma-separated record names")
    ap.add_argument("--every", type=int, default=5, help="score every n-th window")
    ap.add_argument("--detector", default=None, choices=PEAK_DETECTORS, help="default: the default model's (dsp.peak_detector)")
    ap.add_argument("--grid", action="store_true", help="score energy_t's settings (and both detectors), fewest errors first")
    args = ap.parse_args()
    names = DS1 if args.records == "DS1" else DS2 if args.records == "DS2" else tuple(args.records.split(","))
    card = load_card(default_model_dir(), verify_files=False)
    if args.grid:
        detectors = {d: functools.partial(r_peaks, detector=d) for d in PEAK_DETECTORS} | grid()
    else:
        chosen = args.detector or card.dsp.peak_detector
        detectors = {chosen: functools.partial(r_peaks, detector=chosen)}
    total = {d: np.zeros(3, dtype=np.int64) for d in detectors}
    seconds, windows = dict.fromkeys(detectors, 0.0), 0
    for name in names:
        scores = score_record(card, name, args.every, detectors)
        for d, (tp, fn, fp, sec, n) in scores.items():
            total[d] += (tp, fn, fp)
            seconds[d] += sec
        windows += n
        if not args.grid:
            tp, fn, fp, _, _ = scores[next(iter(detectors))]
            print(f"{name}: Se {tp / max(tp + fn, 1):.4f} +P {tp / max(tp + fp, 1):.4f} (missed {fn}, extra {fp})")
    for d in sorted(total, key=lambda d: total[d][1] + total[d][2]):
        tp, fn, fp = total[d]
        print(f"{d} ({args.records}): Se {tp / (tp + fn):.4f} +P {tp / (tp + fp):.4f}; missed {fn}, extra {fp}, "
              f"errors {fn + fp}; {1000 * seconds[d] / max(windows, 1):.2f} ms per window")


if __name__ == "__main__":
    main()
