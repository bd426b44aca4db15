"""Rhythm fusion: a learning-free prematurity score added to a class's logit after the network.

Supraventricular ectopy is mostly a timing finding. The network sees the RR channels
(`stream_ecg.rhythm`), yet across patients it ranks S windows worse than the plainest timing score,
the window's shortest RR interval relative to its median RR (docs/results_notes.md: out-of-fold on
DS1). A card's `rhythm_fusion` ({class: weight}) adds weight x that prematurity to the class's logit.
The score is read from the model's own `rr_prev` input channel, so it needs no state, and every path
that calls the model (live worker, offline evaluation, the interval labelling's re-runs with an
interval removed) computes it from exactly the window the network saw.
"""

from __future__ import annotations

import numpy as np

from .card import ModelCard
from .rhythm import RR_CLIP, r_peaks, rereferenced, stream_relative

_EPS = 1e-7


def rr_prematurity(x: np.ndarray, n_leads: int, reference: str = "median", fs: float | None = None,
                  detector: str = "energy", stream_rr: np.ndarray | None = None,
                  peaks: list[np.ndarray] | None = None) -> np.ndarray:
    """Per window of model input (B, n_leads + rhythm channels, n): -log(shortest RR / reference RR), from
    the `rr_prev` channel, which `rhythm.add_rhythm` puts right after the `n_leads` leads (RR before each
    beat over the reference, minus 1, clipped; 0 where unknown), so 0 when no beat came early. Values
    outside the channel's clip range (not a real rhythm channel) are clipped to it, and non-finite ones read as 0.
    With `reference` "mean" the channel is read at the R peaks of the first lead (`rhythm.r_peaks` at `fs` with
    `detector`, as the channel was painted) and taken against the mean of the window's RRs (`rhythm.rereferenced`).
    With "stream" each window's RRs from its R peaks are taken over its `stream_rr` (the stream's recent reference RR,
    its median or mean as the card's prematurity_centre says; samples, one per window: `postprocess.stream_rr_reference`), or against the window's median where that is NaN
    (too few RRs held yet). Why: inside a run of ectopy or tachycardia the window's median is the run's own RR.
    `peaks`: each window's R peaks when already found (`dsp.window_input_with_peaks`), else found here."""
    rr_prev = np.nan_to_num(np.asarray(x, np.float64)[:, n_leads], nan=0.0, posinf=0.0, neginf=0.0)
    if reference == "stream" and (stream_rr is None or len(stream_rr) != len(rr_prev)):
        raise ValueError("the 'stream' prematurity reference needs each window's stream RR (stream_rr)")
    if reference == "median":
        shortest = np.min(rr_prev, axis=-1)
    else:
        if fs is None:
            raise ValueError(f"the {reference!r} prematurity reference finds R peaks, so it needs fs")
        shortest = np.zeros(len(rr_prev))
        for i, (lead, channel) in enumerate(zip(np.asarray(x)[:, 0], rr_prev)):
            found = r_peaks(lead, fs, detector) if peaks is None else peaks[i]
            rel = stream_relative(found, stream_rr[i]) if reference == "stream" else rereferenced(channel[found], reference)
            shortest[i] = min(0.0, float(np.min(channel if rel is None else rel, initial=0.0)))
    return -np.log1p(np.clip(shortest, *RR_CLIP))


def logit_offsets(fusion: dict[str, float], classes: tuple[str, ...] | list[str], prem: np.ndarray) -> np.ndarray:
    """(n, len(classes)): what the fusion adds to each class's logit, weight x prematurity (0 for the others).
    The one definition the runtime (`fuse`) and the trainer's out-of-fold scoring share."""
    return np.stack([fusion.get(c, 0.0) * np.asarray(prem, np.float64) for c in classes], axis=1)


def card_prematurity(card: ModelCard, x: np.ndarray, stream_rr: np.ndarray | None = None,
                     peaks: list[np.ndarray] | None = None) -> np.ndarray:
    """`rr_prematurity` of model input `x` as `card` reads it (its leads, its prematurity reference, its fs)."""
    return rr_prematurity(x, len(card.leads.leads), card.prematurity_reference, card.fs, card.dsp.peak_detector, stream_rr,
                          peaks)


def stream_fused(card: ModelCard) -> bool:
    """Does the card's fusion read the stream's RR reference (so every model call needs it, window by window)?"""
    return bool(card.rhythm_fusion) and card.prematurity_reference == "stream"


def fuse(card: ModelCard, x: np.ndarray, probs: np.ndarray, stream_rr: np.ndarray | None = None,
         peaks: list[np.ndarray] | None = None) -> np.ndarray:
    """The card's class probabilities with each fused class's logit raised by weight x prematurity;
    the normal class stays prod(1 - p_abnormal), as the network's output defines it."""
    if not card.rhythm_fusion:
        return probs
    p = np.clip(np.asarray(probs, np.float64), _EPS, 1 - _EPS)
    prem = card_prematurity(card, x, stream_rr, peaks)
    out = 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p) + logit_offsets(card.rhythm_fusion, card.classes, prem))))
    out = np.where([c in card.rhythm_fusion for c in card.classes], out, np.asarray(probs, np.float64))
    if "normal" in card.classes:
        out[:, card.classes.index("normal")] = np.prod([1 - out[:, card.classes.index(c)] for c in card.abnormal], axis=0)
    return out.astype(np.asarray(probs).dtype)


class FusedModel:
    """An inference backend whose probabilities carry the card's rhythm fusion (attention unchanged)."""

    def __init__(self, inner) -> None:
        self.inner, self.card, self.backend = inner, inner.card, inner.backend

    def infer(self, x: np.ndarray, rr_reference: np.ndarray | None = None,
              peaks: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        probs, attention = self.inner.infer(x)
        return fuse(self.card, x, probs, rr_reference, peaks), attention

    def infer_raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's own outputs, before the fusion (`infer_windows_raw`)."""
        return self.inner.infer(x)


def with_fusion(model):
    """`model` itself, or wrapped in `FusedModel` when its card asks for rhythm fusion."""
    return FusedModel(model) if model.card.rhythm_fusion else model


def infer_windows(model, x: np.ndarray, rr_reference: np.ndarray | None = None,
                  peaks: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`model.infer(x)`, handing a "stream" card's fusion each window's stream RR reference (and its R peaks, when
    already found): how the live batcher and the offline path call every backend alike."""
    return call_infer(model.infer, model.card, x, rr_reference, peaks)


def infer_windows_raw(model, x: np.ndarray, rr_reference: np.ndarray | None = None,
                      peaks: list[np.ndarray] | None = None) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(raw, probs, attention): `infer_windows`, with the network's probabilities before the fusion too, from one
    network call; what a card's class_rules fuse anew (`postprocess.label_windows`). raw is None for a model whose card
    fuses but which offers no `infer_raw` (a wrapper that hides it)."""
    if not model.card.rhythm_fusion or not hasattr(model, "infer_raw"):
        probs, attention = infer_windows(model, x, rr_reference, peaks)
        return (None if model.card.rhythm_fusion else probs), probs, attention
    raw, attention = model.infer_raw(x)
    fused = fuse(model.card, x, raw, rr_reference, peaks) if stream_fused(model.card) else fuse(model.card, x, raw)
    return raw, fused, attention


def call_infer(infer, card: ModelCard, x: np.ndarray, rr_reference: np.ndarray | None = None,
               peaks: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`infer(x)`, or `infer(x, rr_reference[, peaks])` when the card's fusion reads the stream RR reference: the one
    place that decides it, for `infer_windows` and for the occlusion re-runs of `postprocess.label_intervals` alike."""
    if not stream_fused(card):
        return infer(x)
    return infer(x, rr_reference) if peaks is None else infer(x, rr_reference, peaks)
