"""Whole records through the serving path, offline: the same DSP, windows, model call, interval
labelling and merging as the live worker, without sockets. Used for evaluation and parity checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.mitdb import Record
from .card import LeadContract
from .dsp import DspConfig, preprocess, window_input_with_peaks
from .fusion import infer_windows_raw
from .infer import InferenceModel
from .postprocess import (IntervalMerger, LabelledInterval, label_windows, located_classes, new_recent, new_reference,
                          stream_irregularity, stream_rr_reference)


@dataclass(frozen=True)
class RecordOutput:
    name: str
    fs: float  # model rate; every sample index below is at this rate
    starts: np.ndarray  # (n,) window starts
    probs: np.ndarray  # (n, classes)
    intervals: tuple[LabelledInterval, ...]  # published (merged) intervals, absolute samples
    first_seen: np.ndarray  # (len(intervals),) start sample of the window that first published each
    beat_samples: np.ndarray  # annotated R peaks at the model rate
    beat_aami: np.ndarray  # their AAMI class letters
    lead_fallback: bool
    # (n, len(card.abnormal)): did the window's interval rule mark an interval of each class in it (the wire's
    # Result.located, with the alarm); None where not recorded
    located: np.ndarray | None = None


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Starts of the windows a live stream of n_samples emits: one per hop once a window is full."""
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, hop, dtype=np.int64)


def model_input(leads: LeadContract, dsp: DspConfig, rec: Record) -> tuple[np.ndarray, bool]:
    """The contract's leads of a record, preprocessed to the model rate (the live path's DSP, one chunk)."""
    idx, fallback = leads.pick(rec.leads)
    return preprocess(rec.signal[idx], rec.fs, dsp), fallback


def run_record(model: InferenceModel, rec: Record, batch: int = 64) -> RecordOutput:
    card = model.card
    sig, fallback = model_input(card.leads, card.dsp, rec)
    starts = window_starts(sig.shape[1], card.window, card.hop)
    merger = IntervalMerger.for_card(card)
    history, recent, reference = card.dsp.new_history(), new_recent(card), new_reference(card)
    probs, published, first_seen, located = [], [], [], []
    for i in range(0, len(starts), batch):
        s = starts[i : i + batch]
        x, peaks = window_input_with_peaks(np.stack([sig[:, a : a + card.window] for a in s]), card.dsp, s, history)
        irregular = stream_irregularity(card, x, s, recent, peaks)
        rr_ref = stream_rr_reference(card, x, s, reference, peaks)
        raw, p, att = infer_windows_raw(model, x, rr_ref, peaks)
        probs.append(p)
        for start, ivs in zip(s, label_windows(card, model, x, raw, p, att, irregular, rr_ref, peaks)):
            located.append([c in located_classes(card, ivs) for c in card.abnormal])
            new = merger.add([iv.shift(int(start)) for iv in ivs])
            published.extend(new)
            first_seen.extend([int(start)] * len(new))
    scale = card.fs / rec.fs
    return RecordOutput(
        name=rec.name,
        fs=card.fs,
        starts=starts,
        probs=np.concatenate(probs) if probs else np.zeros((0, len(card.classes)), np.float32),
        intervals=tuple(published),
        first_seen=np.asarray(first_seen, dtype=np.int64),
        beat_samples=np.round(rec.beats.samples * scale).astype(np.int64),
        beat_aami=rec.beats.aami(),
        lead_fallback=fallback,
        located=np.array(located, dtype=bool).reshape(-1, len(card.abnormal)),
    )
