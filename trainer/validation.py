"""Scores on held-out DS1 records through the runtime's own path, straight from a training run.

Model and rule choices (interval rule, thresholds) must be made without DS2. For a run with
one validation set the whole model scores its validation records; for a cross-fitted run each
member scores only the fold it never saw, so the pooled outputs are out-of-fold for all of DS1.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from stream_ecg.card import ModelCard
from stream_ecg.data import load_record
from stream_ecg.fusion import with_fusion
from stream_ecg.offline import RecordOutput, run_record

from .bedside import BedsideConfig, _f1, fold_networks
from .export import Deployable
from .train import load_checkpoint


class CheckpointModel:
    """A network from a checkpoint behind the runtime's `InferenceModel` call (no export needed)."""

    backend = "torch-checkpoint"

    def __init__(self, card: ModelCard, net: torch.nn.Module, cache: dict | None = None, tag: object = None):
        self.card, self.net, self.cache, self.tag = card, Deployable(net, "multilabel"), cache, tag

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.cache is None:
            return self._run(x)
        key = (self.tag, x.shape, hashlib.blake2b(x.tobytes(), digest_size=16).digest())
        if key not in self.cache:
            self.cache[key] = self._run(x)
        probs, attention = self.cache[key]
        return probs.copy(), attention.copy()  # callers may write into what they get

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            probs, attention = self.net(torch.from_numpy(x))
        return probs.numpy(), attention.numpy()


def held_out_outputs(run: Path, card: ModelCard, data_dir=None, cache: dict | None = None) -> list[RecordOutput]:
    """Each held-out DS1 record run by the network that did not train on it, with `card`'s rules.
    `cache` (a dict kept across calls) remembers each batch's network outputs, so comparing interval
    rules on one run costs one pass of the network, not one per rule."""
    model, ckpt = load_checkpoint(Path(run) / "checkpoint.pt")
    cfg = BedsideConfig.from_dict(ckpt["bedside"]["bedside_config"])
    if cfg.folds:
        pairs = fold_networks(model, cfg)
    else:
        pairs = [(model, cfg.val_records)]
    outputs = []
    for k, (net, records) in enumerate(pairs):
        runner = with_fusion(CheckpointModel(card, net, cache, (str(run), k)))
        outputs.extend(run_record(runner, load_record(r, data_dir)) for r in records)
    return outputs


def member_training_outputs(run: Path, card: ModelCard, data_dir=None) -> list[tuple[int, list[RecordOutput]]]:
    """Each member of a cross-fitted run alone, with `card`'s rules, on the DS1 records it trained on (every fold but
    its own). Why: a member whose attention lights the wrong beats may show it on its own training records, where the
    window labels it was fit to say nothing about which beat is ectopic; a check there leaves the held-out folds unspent."""
    model, ckpt = load_checkpoint(Path(run) / "checkpoint.pt")
    cfg = BedsideConfig.from_dict(ckpt["bedside"]["bedside_config"])
    if not cfg.folds:
        raise ValueError(f"{run} is not a cross-fitted run (trainer train --folds)")
    return [(k, training_outputs(net, cfg, held_out, card, data_dir)) for k, (net, held_out) in enumerate(fold_networks(model, cfg))]


def training_outputs(net, cfg: BedsideConfig, held_out: tuple[str, ...], card: ModelCard, data_dir=None) -> list[RecordOutput]:
    """One network alone, with `card`'s rules, on the DS1 records of every fold but the one it held out."""
    runner = with_fusion(CheckpointModel(card, net))
    trained_on = [r for fold in cfg.folds for r in fold if r not in held_out]
    return [run_record(runner, load_record(r, data_dir)) for r in trained_on]


def _record_f1(row: dict) -> float | None:
    """Beat F1 of one record and class from `records_beat` (se, ppv, beats, intervals); None without beats of the class."""
    if not row["beats"]:
        return None
    return _f1(row["se"], row["ppv"] if row["intervals"] else 0.0)


def fold_scores(row: dict, folds: list[list[str]], seeds: list[int] | None = None, classes=("S", "V")) -> list[dict]:
    """Pooled beat Se / +P / F1 of each fold's records in one `trainer validate` row of a cross-fitted run: each fold is
    scored by the one member that held it out, so this is each member's beat-level localisation. Why: a member whose
    attention lights the wrong beats keeps good window scores and only shows here."""
    out = []
    for k, records in enumerate(folds):
        rows = [row["records_beat"][r] for r in records if r in row["records_beat"]]
        if not rows:
            raise ValueError(f"fold {k} ({', '.join(records)}) has no record in this validate row")
        fold: dict = {"fold": k, "seed": seeds[k] if seeds else None, "records": list(records)}
        for c in classes:
            beats, intervals = sum(r[c]["beats"] for r in rows), sum(r[c]["intervals"] for r in rows)
            found = sum((r[c]["se"] or 0.0) * r[c]["beats"] for r in rows if r[c]["beats"])
            right = sum((r[c]["ppv"] or 0.0) * r[c]["intervals"] for r in rows if r[c]["intervals"])
            se = found / beats if beats else None
            ppv = right / intervals if intervals else None
            fold[c] = {"se": se, "ppv": ppv, "f1": _f1(se, ppv or 0.0) if se is not None else None,
                       "beats": beats, "intervals": intervals}
        out.append(fold)
    return out


def record_changes(base: dict, new: dict, classes=("S", "V"), tie: float = 1e-9) -> dict:
    """Per class, the records (with beats of the class) whose beat F1 rose, fell or stayed between two `trainer
    validate` rows' `records_beat`: whether a pooled gain is broad or carried by a few records."""
    out = {}
    for c in classes:
        up, down, same = [], [], []
        for rec, b in base["records_beat"].items():
            fb, fn = _record_f1(b[c]), _record_f1(new["records_beat"][rec][c])
            if fb is None:
                continue
            (up if fn > fb + tie else down if fn < fb - tie else same).append(rec)
        out[c] = {"up": len(up), "down": len(down), "same": len(same), "records_up": up, "records_down": down}
    return out


def beat_summary(row: dict, classes=("S", "V")) -> dict:
    """One `trainer validate` row in the numbers the rules in docs/results_notes.md compare: pooled beat Se / +P / F1
    per class and their mean over `classes` (mean beat F1)."""
    per = {c: {"se": row["beat"][c]["se"], "ppv": row["beat"][c]["ppv"], "f1": _f1(row["beat"][c]["se"], row["beat"][c]["ppv"])}
           for c in classes}
    return {"thresholds": row["thresholds"], "beat": per, "mean_beat_f1": float(np.mean([per[c]["f1"] for c in classes]))}
