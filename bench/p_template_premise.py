"""Exploration (reported only, DS1 alone): does an early beat's P wave tell an atrial premature beat from an early
sinus beat? For each annotated beat at least 20 % early against the mean of the stream's RRs over the last 5 min (the
default card's S reference), the stretch where a P wave sits (250-80 ms before R, `morphology.P_FROM_S`/`P_TO_S`) is
correlated, on each of the card's two leads after its DSP, with the median of that stretch over the last 20 beats that
came no more than 10 % early (causal: the stream's own usual P wave), and the two correlations averaged. S beats
against N beats, by the rhythm annotation in force. Annotated R peaks and labels: an upper bound on what the test
could do, not a result of the product.

Usage: .venv/bin/python bench/p_template_premise.py > docs/results/p_template_premise.json
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rr_lda_rhythm import rhythm_at  # noqa: E402
from stream_ecg.card import default_model_dir, load_card  # noqa: E402
from stream_ecg.data import load_record  # noqa: E402
from stream_ecg.data.mitdb import DS1  # noqa: E402
from stream_ecg.morphology import P_FROM_S, P_TO_S  # noqa: E402
from stream_ecg.offline import model_input  # noqa: E402
from stream_ecg.rhythm import STREAM_CONTEXT, STREAM_REFERENCE_MIN_RR  # noqa: E402

EARLY, USUAL, TEMPLATE_BEATS = 0.2, 0.1, 20


def record_rows(name: str, card) -> list[tuple[str, str, float]]:
    """(AAMI class, rhythm, P correlation) of each early beat of one record."""
    rec = load_record(name)
    sig, _ = model_input(card.leads, card.dsp, rec)
    scale = card.fs / rec.fs
    s = np.round(np.asarray(rec.beats.samples) * scale).astype(np.int64)
    aami, rhythm = np.asarray(rec.beats.aami()), rhythm_at(name, np.asarray(rec.beats.samples))
    stretch = np.arange(-int(round(P_FROM_S * card.fs)), -int(round(P_TO_S * card.fs)))
    rr = np.diff(s).astype(float)
    usual: list[np.ndarray] = []
    rows = []
    for k in range(1, len(s)):
        if s[k] + stretch[0] < 0:
            continue
        seen = rr[max(np.searchsorted(s, s[k] - STREAM_CONTEXT), 0) : k - 1]
        if len(seen) < STREAM_REFERENCE_MIN_RR:
            continue
        rel = rr[k - 1] / np.mean(seen) - 1.0
        p = sig[:, s[k] + stretch]
        if rel <= -EARLY and len(usual) >= TEMPLATE_BEATS // 2:
            t = np.median(np.stack(usual[-TEMPLATE_BEATS:]), axis=0)
            a, b = p - p.mean(axis=1, keepdims=True), t - t.mean(axis=1, keepdims=True)
            corr = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
            rows.append((str(aami[k]), str(rhythm[k]), float(np.mean(corr))))
        if rel > -USUAL:
            usual.append(p)
    return rows


def main() -> None:
    card = load_card(default_model_dir())
    rows = [row for name in DS1 for row in record_rows(name, card)]
    c = np.array([r[2] for r in rows])
    groups = {"S": np.array([r[0] == "S" for r in rows]),
              "N_sinus": np.array([r[0] == "N" and r[1] == "(N" for r in rows]),
              "N_fibrillation_flutter": np.array([r[0] == "N" and r[1] in ("(AFIB", "(AFL") for r in rows]),
              "V": np.array([r[0] == "V" for r in rows])}
    out = {"early": EARLY, "template_beats": TEMPLATE_BEATS, "leads": list(card.leads.leads), "groups": {}}
    for g, m in groups.items():
        v = c[m]
        out["groups"][g] = {"beats": int(m.sum()),
                            "quantiles_10_25_50_75_90": [float(q) for q in np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])] if v.size else [],
                            "share_below": {str(t): float(np.mean(v < t)) if v.size else None for t in (0.3, 0.5, 0.7, 0.8)}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
