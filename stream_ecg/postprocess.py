"""Model outputs -> published intervals: label each attention interval, then merge across windows.

Each candidate interval (from the attention map, `intervals.attention_to_intervals`) of a window
that alarms takes the alarmed class; windows alarming for several classes re-run the model, with
each candidate removed, to attribute it, and with `interval_rule.keep_drop` every alarming window
with several candidates does, to drop the candidates the class does not rest on (the attention
map also lights normal neighbours of an ectopic beat). (Re-running on the window masked *to* one interval
was tried first: a lone premature beat, cut from the rhythm around it, no longer looks
supraventricular, and S sensitivity on the validation records fell sharply.) Successive windows
overlap, so a per-stream `IntervalMerger` reports each beat once.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .card import ModelCard
from .fusion import call_infer, fuse, stream_fused
from .intervals import (attention_to_intervals, distinct_beats, lit_beat, onto_premature, premature_beats,
                        rr_irregularity, snap_to_beats, usual_shaped)
from .morphology import p_wave_consistencies
from .quality import kurtosis_sqi
from .rhythm import RecentRhythm, r_peaks, stream_measures, stream_references

InferFn = Callable[..., tuple[np.ndarray, np.ndarray]]  # infer(x); a "stream"-fused card's: infer(x, rr_reference[, peaks])
PREMATURE_CLASS = "S"  # the class interval_rule.premature moves onto early beats: every AAMI S beat comes early
DISTINCT_CLASS = "V"  # the class interval_rule.distinct keeps only on beats unlike the window's median beat


@dataclass(frozen=True)
class LabelledInterval:
    start: int  # window-relative (or absolute, after `shift`), end exclusive
    end: int
    label: str
    score: float

    def shift(self, offset: int) -> "LabelledInterval":
        return LabelledInterval(self.start + offset, self.end + offset, self.label, self.score)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _abnormal_columns(card: ModelCard) -> tuple[list[int], np.ndarray]:
    """The probability column of each of the card's abnormal classes, and its threshold, in `card.abnormal`'s order."""
    return [card.classes.index(c) for c in card.abnormal], np.array([card.thresholds[c] for c in card.abnormal])


def window_alarms(card: ModelCard, probs: np.ndarray) -> np.ndarray:
    """(n, len(card.abnormal)) booleans: which of the card's abnormal classes each window alarms on (probability at or
    above the card's threshold). The one place the thresholds are applied, for the interval rules and the wire alike."""
    idx, thr = _abnormal_columns(card)
    return np.asarray(probs)[:, idx] >= thr


def label_intervals(
    card: ModelCard,
    infer: InferFn,
    x: np.ndarray,
    probs: np.ndarray,
    attention: np.ndarray,
    pad: int = 18,
    irregular: np.ndarray | None = None,
    rr_reference: np.ndarray | None = None,
    peaks: list[np.ndarray] | None = None,
    classes: tuple[str, ...] | None = None,
) -> list[list[LabelledInterval]]:
    """Labelled intervals per window (window-relative) for the windows whose class probability alarms.

    A window alarming for one class gives that class to each of its attention intervals. A window
    alarming for several asks the model which class each interval carries: every candidate is
    removed in turn (zeroed +-pad samples, one batched call) and takes the alarmed class whose
    probability falls most, relative to its threshold. With `keep_drop` > 0 every alarming window
    with several candidates is re-run so, and a candidate is published only if removing it lowers
    its class's logit by at least keep_drop times the window's largest drop for that class (logits,
    not probabilities: with two ectopic beats in view the probability stays saturated when one goes).
    Score: the class probability of the window times the interval's normalised attention peak.
    `irregular`: each window's `stream_irregularity`, needed when the card's rule has `regular_stream`.
    `rr_reference`: each window's `stream_rr_reference`, needed when the card reads a stream RR reference (its rule's
    `premature_context`, or its `prematurity_reference` "stream", whose fused `infer` then also takes it).
    `peaks`: each window's R peaks on its first lead when already found (`dsp.window_input_with_peaks`).
    `classes`: return only these classes' intervals (default: every abnormal class), skipping the steps that judge
    only the others; every alarm still takes part in the occlusion, so what is returned does not depend on it.
    """
    rule = card.interval_rule
    wanted = set(card.abnormal if classes is None else classes)
    if rule.regular_stream > 0 and PREMATURE_CLASS in card.abnormal and (irregular is None or len(irregular) != len(x)):
        raise ValueError("interval_rule.regular_stream needs each window's stream irregularity (stream_irregularity)")
    if card.stream_reference is not None and (rr_reference is None or len(rr_reference) != len(x)):
        raise ValueError("a card with a stream RR reference (interval_rule.premature_context, prematurity_reference "
                         "'stream') needs each window's stream RR reference (stream_rr_reference)")
    out: list[list[LabelledInterval]] = [[] for _ in range(len(x))]
    idx, thr = _abnormal_columns(card)  # the occlusion step weighs each class's drop against its threshold
    keep_drop = card.interval_rule.keep_drop
    window_alarm = window_alarms(card, probs)
    occlude: list[tuple[int, int, int, float]] = []
    found: dict[int, np.ndarray] = {} if peaks is None else dict(enumerate(peaks))
    if peaks is not None and len(peaks) != len(x):
        raise ValueError(f"peaks for {len(peaks)} windows, but {len(x)} windows")

    def peaks_of(i: int) -> np.ndarray:  # each window's R peaks, found once for snap, premature and distinct alike
        if i not in found:
            found[i] = r_peaks(x[i, 0], card.fs, card.dsp.peak_detector)
        return found[i]

    for i in np.flatnonzero(window_alarm.any(axis=1)):
        classes = np.flatnonzero(window_alarm[i])
        candidates = attention_to_intervals(attention[i], card.interval_rule)
        if card.interval_rule.snap > 0:
            candidates = snap_to_beats(candidates, attention[i], peaks_of(int(i)), x.shape[-1], card.interval_rule)
        test = len(classes) > 1 or (keep_drop > 0 and len(candidates) > 1)
        for s, e, peak in candidates:
            if test:
                occlude.append((int(i), s, e, peak))
            else:
                c = int(classes[0])
                out[i].append(LabelledInterval(s, e, card.abnormal[c], float(probs[i, idx[c]] * peak)))
    if occlude:
        windows = [i for i, *_ in occlude]
        removed = x[windows].copy()
        for k, (i, s, e, _) in enumerate(occlude):
            removed[k, :, max(0, s - pad) : min(x.shape[-1], e + pad)] = 0.0
        rprobs, _ = call_infer(infer, card, removed, None if rr_reference is None else np.asarray(rr_reference)[windows])
        before, after = probs[windows][:, idx], rprobs[:, idx]
        drop = (before - after) / np.maximum(thr, 1e-6)
        logit_drop = _logit(before) - _logit(after)
        labels = [int(np.argmax(np.where(window_alarm[i], drop[k], -np.inf))) for k, (i, *_) in enumerate(occlude)]
        if rule.shape_split:  # an S call on an unusual beat is V's: premature_all marks S on usual early beats only
            labels = [_shape_split(card, x[i], peaks_of(i), attention[i], s, e, labels[k], window_alarm[i])
                      for k, (i, s, e, _) in enumerate(occlude)]
        largest: dict[tuple[int, int], float] = {}
        for k, (i, *_) in enumerate(occlude):
            largest[i, labels[k]] = max(largest.get((i, labels[k]), -np.inf), logit_drop[k, labels[k]])
        for k, (i, s, e, peak) in enumerate(occlude):
            c, top = labels[k], largest[i, labels[k]]
            keep = keep_drop <= 0 or logit_drop[k, c] >= top or (top > 0 and logit_drop[k, c] >= keep_drop * top)
            if not keep:  # the window's class does not rest on this candidate
                continue
            out[i].append(LabelledInterval(s, e, card.abnormal[c], float(probs[i, idx[c]] * peak)))
    if card.interval_rule.premature > 0 and PREMATURE_CLASS in wanted:
        c = card.abnormal.index(PREMATURE_CLASS)
        for i in np.flatnonzero(window_alarm[:, c]):
            ref = None if rr_reference is None else float(rr_reference[i])
            out[i] = _premature(card, x[i], peaks_of(int(i)), float(probs[i, idx[c]]), attention[i], out[i], ref)
    if PREMATURE_CLASS in wanted:  # the S gates: each drops a window's S intervals when its test fails
        rr_at = len(card.leads.leads)  # validated: the rr_prev channel follows the leads
        gates = [(card.interval_rule.regular > 0,  # r_peaks lie inside the window
                  lambda i: not rr_irregularity(x[i, rr_at][peaks_of(i)]) > card.interval_rule.regular),
                 (rule.regular_stream > 0, lambda i: not irregular[i] > rule.regular_stream),
                 (rule.min_kurtosis > 0, lambda i: kurtosis_sqi(x[i, 0]) >= rule.min_kurtosis),  # NaN (a flat lead) fails
                 (rule.min_p_consistency > 0,  # NaN: cannot judge, kept
                  lambda i: not _p_consistency(card, x[i], peaks_of(i)) < rule.min_p_consistency)]
        for on, passes in gates:
            for i, ivs in enumerate(out if on else []):
                if any(iv.label == PREMATURE_CLASS for iv in ivs) and not passes(i):
                    out[i] = [iv for iv in ivs if iv.label != PREMATURE_CLASS]
    if card.interval_rule.distinct > 0 and DISTINCT_CLASS in wanted:
        for i in range(len(out)):
            if any(iv.label == DISTINCT_CLASS for iv in out[i]):
                out[i] = _distinct(card, x[i], peaks_of(i), attention[i], out[i])
    if rule.left_edge > 0:
        out = [[iv for iv in ivs if iv.start + iv.end >= 2 * rule.left_edge] for ivs in out]  # centre >= left_edge
    out = [[iv for iv in ivs if iv.label in wanted] for ivs in out]
    for ivs in out:
        ivs.sort(key=lambda iv: iv.start)
    return out


def located_classes(card: ModelCard, intervals: list[LabelledInterval]) -> tuple[str, ...]:
    """The card's abnormal classes that one window's labelled intervals mark (its alarms placed at a beat: the wire's
    Result.located); the one definition the publisher and the offline path share."""
    return tuple(c for c in card.abnormal if any(iv.label == c for iv in intervals))


def label_windows(card: ModelCard, model, x: np.ndarray, raw: np.ndarray | None, probs: np.ndarray, attention: np.ndarray,
                  irregular: np.ndarray | None = None, rr_reference: np.ndarray | None = None,
                  peaks: list[np.ndarray] | None = None) -> list[list[LabelledInterval]]:
    """`label_intervals` for a served model (`infer.load_model`): each class of the card's `class_rules` labelled under
    its own settings (`ModelCard.for_class`), on its own fusion of the network's `raw` probabilities and with re-runs
    fused so, the other classes under the card itself (`probs`: the card's fused probabilities). The one call the
    live batcher and the offline path share. Without class_rules it is `label_intervals` on the card."""
    kw = dict(irregular=irregular, rr_reference=rr_reference, peaks=peaks)
    own = tuple(c for c in card.abnormal if c not in card.class_rules)
    if not card.class_rules:
        return label_intervals(card, model.infer, x, probs, attention, classes=own, **kw)
    check_labels(model)
    if raw is None:
        raise ValueError(f"{card.name} labels classes under their own rules (class_rules): it needs the network's raw "
                         "outputs (fusion.infer_windows_raw)")
    # every rule re-runs the same occluded windows (one attention map, one candidate set): each runs through the
    # network once
    raw_infer = _RawMemo(model.infer_raw if card.rhythm_fusion else model.infer)
    out = [[] for _ in x]
    parts = [(card, own, probs)] + [(rules, (c,), fuse(rules, x, raw, rr_reference if stream_fused(rules) else None, peaks))
                                    for c, rules in ((c, card.for_class(c)) for c in card.class_rules)]
    for part, labels, part_probs in parts:
        if not labels:
            continue

        def part_infer(xs, rr=None, pk=None, part=part):  # the network's raw outputs, fused as this rule's card says
            net_probs, net_attention = raw_infer(xs)
            return fuse(part, xs, net_probs, rr, pk), net_attention

        for ivs, more in zip(out, label_intervals(part, part_infer, x, part_probs, attention, classes=labels, **kw)):
            ivs.extend(more)
    for ivs in out:
        ivs.sort(key=lambda iv: iv.start)
    return out


def check_labels(model) -> None:
    """Refuse, with the reason, a served model `label_windows` cannot label: a card with class_rules and a fusion needs
    the network's outputs before the fusion (`infer_raw`, as fusion.FusedModel offers). The worker checks at start, so
    such a model fails there, not batch by batch."""
    card = model.card
    if card.class_rules and card.rhythm_fusion and not hasattr(model, "infer_raw"):
        raise ValueError(f"{card.name} labels classes under their own rules (class_rules), so its model must offer "
                         "infer_raw: the network's outputs before the card's fusion (fusion.FusedModel does)")


class _RawMemo:
    """A network call that remembers each input window's outputs (by a digest of its samples) and runs only the
    windows it has not seen, in one batch."""

    def __init__(self, infer: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]):
        self.infer, self.seen = infer, {}

    def __call__(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs = np.ascontiguousarray(xs, dtype=np.float32)
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in xs]
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [i for k, i in first.items() if k not in self.seen]
        if todo:
            p, a = self.infer(xs[todo])
            for j, i in enumerate(todo):
                self.seen[keys[i]] = (p[j], a[j])
        return (np.stack([self.seen[k][0] for k in keys]), np.stack([self.seen[k][1] for k in keys]))


def new_recent(card: ModelCard) -> RecentRhythm | None:
    """A fresh stream's rhythm memory for `stream_irregularity`, or None when the card's rule needs none."""
    rule = card.interval_rule
    return RecentRhythm(rule.regular_context, card.fs) if rule.regular_stream > 0 else None


def stream_irregularity(card: ModelCard, x: np.ndarray, starts: np.ndarray, recent: RecentRhythm | None,
                        peaks: list[np.ndarray] | None = None) -> np.ndarray | None:
    """Each of one stream's windows (model inputs, in stream order, at absolute `starts`): `rr_irregularity` of the
    stream's RRs over the rule's `regular_context` samples that end with it, `recent` updated as it goes; None without
    `recent`. Why a stream's and not a window's: six beats of atrial fibrillation can look regular, 30 s rarely do.
    `peaks`: each window's R peaks when already found (`dsp.window_input_with_peaks`)."""
    if recent is None:
        return None
    return stream_measures(np.asarray(x)[:, 0], starts, card.fs, card.dsp.peak_detector, recent,
                           lambda m: rr_irregularity(m.relative()), peaks)


def new_reference(card: ModelCard) -> RecentRhythm | None:
    """A fresh stream's RR memory for `stream_rr_reference`, or None when the card reads none."""
    spec = card.stream_reference
    return None if spec is None else RecentRhythm(spec[0], card.fs)


def stream_rr_reference(card: ModelCard, x: np.ndarray, starts: np.ndarray, memory: RecentRhythm | None,
                        peaks: list[np.ndarray] | None = None) -> np.ndarray | None:
    """Each of one stream's windows (model inputs, in stream order, at absolute `starts`): the stream's reference RR
    the card reads (`ModelCard.stream_reference`; samples, NaN while too few RRs are held), `memory` updated as it goes; None
    without `memory`. What the premature rule, and a "stream" card's fusion, judge a beat early against."""
    spec = card.stream_reference
    if memory is None or spec is None:
        return None
    return stream_references(np.asarray(x)[:, 0], starts, card.fs, card.dsp.peak_detector, memory, spec[1], peaks)


def _p_consistency(card: ModelCard, x: np.ndarray, peaks: np.ndarray) -> float:
    """One window's `p_wave_consistency`, on its first lead or (interval_rule.p_wave_leads "mean") averaged over its
    leads, those it cannot judge left out; NaN when none can be judged."""
    each = p_wave_consistencies(x[: 1 if card.interval_rule.p_wave_leads == "first" else len(card.leads.leads)],
                                card.fs, peaks)
    judged = each[np.isfinite(each)]
    return float(np.mean(judged)) if judged.size else float("nan")


def _shape_split(card: ModelCard, x: np.ndarray, peaks: np.ndarray, attention: np.ndarray, s: int, e: int, label: int,
                 alarm: np.ndarray) -> int:
    """interval_rule.shape_split: the class index of a candidate [s, e) the occlusion gave `label`; V's instead of S's
    when the window alarms for V and the beat the candidate lit is not shaped like the window's median beat."""
    s_at, v_at = card.abnormal.index(PREMATURE_CLASS), card.abnormal.index(DISTINCT_CLASS)
    if label != s_at or not alarm[v_at]:
        return label
    r = lit_beat(s, e, attention, peaks, card.interval_rule.premature_reach)
    unusual = r is not None and not usual_shaped(np.array([r]), x[card.channels - 1], card.interval_rule.premature_usual)[0]
    return v_at if unusual else label  # validated: the residual is the last channel


def _distinct(card: ModelCard, x: np.ndarray, peaks: np.ndarray, attention: np.ndarray,
              ivs: list[LabelledInterval]) -> list[LabelledInterval]:
    """One window's intervals without the V intervals whose beat matches the window's median beat (interval_rule.distinct)."""
    rule = card.interval_rule
    mine = [iv for iv in ivs if iv.label == DISTINCT_CLASS]
    rr_prev = x[len(card.leads.leads)] if rule.distinct_early else None  # validated: rhythm channels follow the leads
    keep = distinct_beats([(iv.start, iv.end, iv.score) for iv in mine], attention, peaks,
                          x[card.channels - 1], rr_prev, rule)  # validated: the residual is the last channel
    kept = {id(iv) for iv, k in zip(mine, keep) if k}
    return [iv for iv in ivs if iv.label != DISTINCT_CLASS or id(iv) in kept]


def _premature(card: ModelCard, x: np.ndarray, peaks: np.ndarray, prob: float, attention: np.ndarray,
               ivs: list[LabelledInterval], stream_rr: float | None = None) -> list[LabelledInterval]:
    """One S-alarming window's intervals with its S intervals put on its premature beats (interval_rule.premature):
    the attention's S intervals moved onto them, or (premature_all) every premature beat outside a V interval; with
    premature_usual, only the premature beats shaped like the window's median beat count.
    `stream_rr`: the stream's recent reference RR (`stream_rr_reference`), else the window's own."""
    rule, n = card.interval_rule, x.shape[-1]
    rr_prev = x[len(card.leads.leads)]  # the card is validated to carry the rhythm channels right after the leads
    early, rel = premature_beats(peaks, rr_prev, rule.premature, card.prematurity_reference, stream_rr,
                                 rule.premature_pause, rule.premature_pause_early)
    if rule.premature_usual > 0:  # validated: the residual is the last channel
        usual = usual_shaped(early, x[card.channels - 1], rule.premature_usual)
        early, rel = early[usual], rel[usual]
    others = [iv for iv in ivs if iv.label != PREMATURE_CLASS]
    if rule.premature_all:
        peak = float(np.max(attention, initial=0.0))
        free = [int(r) for r in early if not any(v.start <= r < v.end for v in others)]
        lit = [(r, float(attention[r]) / peak if peak > 0 else 0.0) for r in free]
        moved = [(max(0, r - rule.snap_half), min(n, r + rule.snap_half), prob * a) for r, a in lit
                 if a >= rule.premature_attention]
    else:
        mine = [(iv.start, iv.end, iv.score) for iv in ivs if iv.label == PREMATURE_CLASS]
        moved = onto_premature(mine, early, rel, n, rule)
    return others + [LabelledInterval(s, e, PREMATURE_CLASS, float(sc)) for s, e, sc in moved]


@dataclass
class _Remembered:
    """One beat's interval in a stream's `IntervalMerger`: its extent so far, best score and how many windows lit it."""

    start: int
    end: int
    label: str
    score: float
    windows: int = 0
    published: bool = False


class IntervalMerger:
    """Per-stream memory of intervals so an overlapping re-detection is not re-published.

    An interval overlapping a remembered one of the same label by at least `min_overlap` of the
    shorter of the two is the same beat: it extends the remembered one (and raises its best score)
    and counts one more window that lit it. A remembered interval is published once `confirm` windows
    have lit it (1: at once, as it arrives), with the extent and best score those windows gave it, and
    never again. Memory is bounded by `horizon` samples behind the newest interval; an interval that
    leaves it unconfirmed is never published (`unconfirmed` counts them by label, `take_unconfirmed` hands
    the counts over, for the worker's metrics).
    """

    def __init__(self, horizon: int, min_overlap: float = 0.3, confirm: int = 1):
        if confirm < 1:
            raise ValueError(f"confirm={confirm} must be >= 1")
        self.horizon, self.min_overlap, self.confirm = horizon, min_overlap, confirm
        self.seen: deque[_Remembered] = deque()
        self.unconfirmed: Counter[str] = Counter()

    @classmethod
    def for_card(cls, card: ModelCard) -> "IntervalMerger":
        """The merger a stream of this card uses, live and offline alike."""
        return cls(horizon=2 * card.window, confirm=card.interval_rule.confirm)

    def add(self, intervals: list[LabelledInterval]) -> list[LabelledInterval]:
        """One window's intervals (absolute samples) in; the intervals published by this window out."""
        new, lit = [], set()
        for iv in sorted(intervals, key=lambda v: v.start):
            m = next((m for m in self.seen if m.label == iv.label and self._same(m, iv)), None)
            if m is None:
                m = _Remembered(iv.start, iv.end, iv.label, iv.score)
                self.seen.append(m)
            else:
                m.start, m.end, m.score = min(m.start, iv.start), max(m.end, iv.end), max(m.score, iv.score)
            if id(m) not in lit:  # one window lighting one beat twice counts once
                lit.add(id(m))
                m.windows += 1
            if not m.published and m.windows >= self.confirm:
                m.published = True
                new.append(LabelledInterval(m.start, m.end, m.label, float(m.score)))
        if self.seen:
            newest = max(m.end for m in self.seen)
            while self.seen and self.seen[0].end < newest - self.horizon:
                self._forget(self.seen.popleft())
        return new

    def take_unconfirmed(self) -> Counter[str]:
        """The unconfirmed intervals counted since the last call, by label; the count restarts."""
        out, self.unconfirmed = self.unconfirmed, Counter()
        return out

    def _same(self, m: _Remembered, iv: LabelledInterval) -> bool:
        overlap = min(m.end, iv.end) - max(m.start, iv.start)
        return overlap > 0 and overlap >= self.min_overlap * min(m.end - m.start, iv.end - iv.start)

    def _forget(self, m: _Remembered) -> None:
        if not m.published:
            self.unconfirmed[m.label] += 1

    def reset(self) -> None:
        """Forget every interval (a stream that ends or restarts): those still waiting for confirmation count as
        unconfirmed."""
        for m in self.seen:
            self._forget(m)
        self.seen.clear()
