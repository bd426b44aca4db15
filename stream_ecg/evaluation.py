"""Score what a model published for whole records against the cardiologists' beat annotations.

Works on `offline.RecordOutput`s, whichever path produced them (offline batch or the live stream),
so offline and live numbers are computed by the same code.
"""

from __future__ import annotations

import numpy as np

from .card import ModelCard
from .offline import RecordOutput
from .postprocess import window_alarms
from .scoring import (BeatCounts, beat_counts, detection_delays, detection_metrics, distribution, first_window_outcome,
                      located_metrics, unconfirmed_intervals, window_targets)

EC57_TOL_S = 0.150


def score_records(outputs: list[RecordOutput], card: ModelCard, margin: int, skip_s: float = 0.0) -> dict:
    """Beat-level Se/+P per abnormal class (gross and per record), window-level Se/precision/AUC, and
    the detection delay of each found beat (`scoring.detection_delays`: what the stream adds to the alarm)
    and what became of each beat's first window (`scoring.first_window_outcome`: why a beat was late),
    and where the intervals holding no beat of their class came from (`scoring.unconfirmed_intervals`).

    margin: windows whose only beat of a class sits within `margin` samples of an edge are left out
    of that class's window metrics (half a beat is visible there). skip_s: score beats and intervals
    from this time on (EC57 starts at 5 min); window metrics use every window.
    """
    tol = int(round(EC57_TOL_S * card.fs))
    start = int(round(skip_s * card.fs))
    gross = {c: BeatCounts() for c in card.abnormal}
    per_record = []
    delays = {c: [] for c in card.abnormal}
    first = {c: {"beats": 0, "alarmed": 0, "lit": 0} for c in card.abnormal}
    counts_keys = ("intervals", "unconfirmed", "false_alarm", "other_beat", "no_beat")
    wrong = {c: dict.fromkeys(counts_keys, 0) for c in card.abnormal}
    gaps = {c: [np.zeros(0)] for c in card.abnormal}
    truth = {c: [] for c in card.abnormal}
    score = {c: [] for c in card.abnormal}
    located = {c: [] for c in card.abnormal} if all(o.located is not None for o in outputs) else {}
    for out in outputs:
        row = {"record": out.name, "lead_fallback": out.lead_fallback}
        alarmed = window_alarms(card, out.probs)
        for j, c in enumerate(card.abnormal):
            counts = beat_counts(out.beat_samples, out.beat_aami, out.intervals, c, tol, start)
            gross[c] = gross[c] + counts
            row[c] = counts.summary()
            scored = out.beat_samples >= start
            delays[c].append(detection_delays(out.beat_samples[scored], out.beat_aami[scored], out.intervals,
                                              out.first_seen, c, tol, card.window))
            fw = first_window_outcome(out.starts, card.window, alarmed[:, j], out.beat_samples[scored], out.beat_aami[scored],
                                      out.intervals, out.first_seen, c, tol, margin)
            first[c] = {k: first[c][k] + fw[k] for k in fw}
            un = unconfirmed_intervals(out.beat_samples, out.beat_aami, out.intervals, out.first_seen, c, tol,
                                       card.window, start)
            wrong[c] = {k: wrong[c][k] + un[k] for k in counts_keys}
            gaps[c].append(un["gap_samples"])
            row[c]["unconfirmed"] = {k: un[k] for k in counts_keys[1:]}
            core = window_targets(out.starts, card.window, out.beat_samples, out.beat_aami, c, margin)
            anywhere = window_targets(out.starts, card.window, out.beat_samples, out.beat_aami, c, 0)
            keep = core | ~anywhere
            truth[c].append(core[keep])
            score[c].append(out.probs[keep, card.classes.index(c)])
            if located:
                located[c].append(out.located[keep, j])
        per_record.append(row)
    window = {}
    for c in card.abnormal:
        t, s = np.concatenate(truth[c]), np.concatenate(score[c])
        window[c] = detection_metrics(t, s, card.thresholds[c])
    # an alarm placed at a beat (Result.located): Se and precision of the windows that alarm and mark the class
    window_located = {c: located_metrics(np.concatenate(truth[c]), np.concatenate([np.zeros(0, bool), *located[c]]))
                      for c in located}
    beat = {c: gross[c].summary() for c in card.abnormal}
    average = {
        c: {
            "se": float(np.nanmean([r[c]["se"] for r in per_record])) if per_record else float("nan"),
            "ppv": float(np.nanmean([r[c]["ppv"] for r in per_record])) if per_record else float("nan"),
        }
        for c in card.abnormal
    }
    delay = {c: distribution(np.concatenate([np.zeros(0), *delays[c]]) / card.fs) for c in card.abnormal}
    unconfirmed = {c: {**wrong[c], "gap_s": distribution(np.concatenate(gaps[c]) / card.fs)} for c in card.abnormal}
    return {"beat": beat, "beat_record_average": average, "window": window, "window_located": window_located,
            "detection_delay_s": delay,
            "first_window": first, "unconfirmed": unconfirmed, "records": per_record,
            "skip_s": skip_s, "tolerance_s": EC57_TOL_S, "margin_samples": margin}
