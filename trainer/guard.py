"""Guarded cross-fitting: retrain the members of a run whose attention fails on their own training records.

About a third of cross-fitted members (seed-dependent) learn to alarm on the right windows while their attention lights
the wrong beats; their held-out beat F1 collapses though window AUC stays high. Their own training records show it
(`trainer member-check`), and those records say nothing the held-out folds would, so a member can be judged and
retrained there before any fold is scored. See docs/results_notes.md, "Guarded cross-fitting".
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from stream_ecg.card import ModelCard
from stream_ecg.evaluation import score_records
from stream_ecg.offline import RecordOutput

from .bedside import (BedsideConfig, _fusion_of, ds1_windows, ensure_dir, fold_networks, held_out, pooled_thresholds,
                      train_member)
from .validation import _record_f1, training_outputs


@dataclass(frozen=True)
class GuardConfig:
    """Which members fail (beat F1 of `cls` on their training records below `min_f1`) and how they are retrained:
    seed + `seed_step` x 1..`tries`, stopping at the first that passes."""

    cls: str = "V"
    min_f1: float = 0.6
    seed_step: int = 100
    tries: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_f1 <= 1.0 or self.tries < 1 or self.seed_step < 1:
            raise ValueError(f"guard needs 0 <= min_f1 <= 1, tries >= 1 and seed_step >= 1, not {self}")


def training_f1(outputs: list[RecordOutput], card: ModelCard, margin: int, cls: str) -> float:
    """Pooled beat F1 of `cls` over a member's training records."""
    f1 = _record_f1(score_records(outputs, card, margin)["beat"][cls])
    if f1 is None:
        raise ValueError(f"the training records hold no {cls} beats; the guard has nothing to judge by")
    return f1


def scores_from_file(path: Path, run: Path, card: ModelCard, cls: str) -> list[float]:
    """Each member's training-record beat F1 from a saved `trainer member-check` output, refused unless it checked
    this run's very checkpoint (its sha256: a run retrained at the same path, e.g. on another CPU model, has other
    members) with this card's thresholds and interval rule (a check under other rules would judge another model)."""
    from stream_ecg.card import sha256

    d = json.loads(Path(path).read_text())
    if Path(d["run"]) != Path(run):
        raise ValueError(f"{path} checked {d['run']}, not {run}")
    if d.get("checkpoint_sha256") != sha256(Path(run) / "checkpoint.pt"):
        raise ValueError(f"{path} did not check the members now in {run}/checkpoint.pt (its sha256 differs or, from an "
                         "older member-check, is not recorded); run `trainer member-check` on this run again")
    if d["thresholds"] != card.thresholds or d["interval_rule"] != card.interval_rule.to_dict():
        raise ValueError(f"{path} checked {run} under other thresholds or another interval rule than the guard's card")
    return [m["beat"][cls]["f1"] for m in d["members"]]


def _epoch_size(run: Path, meta: dict) -> int:
    """The windows drawn per epoch when `run` was trained: saved in its checkpoint, or (older runs) in its command."""
    if "epoch_size" in meta:
        return int(meta["epoch_size"])
    metrics = run / "metrics.json"
    args = shlex.split(json.loads(metrics.read_text()).get("command", "")) if metrics.exists() else []
    if "--epoch-size" in args:
        return int(args[args.index("--epoch-size") + 1])
    raise ValueError(f"{run} records no epoch size (checkpoint or metrics.json command); it cannot be retrained alike")


def guard_run(run: Path, out: Path, card: ModelCard, guard: GuardConfig = GuardConfig(), data_dir=None,
              scores: list[float] | None = None, command: str = "") -> dict:
    """A copy of cross-fitted `run` in which every member below the guard's cut on its training records is retrained
    on its own fold with the next seeds; the others are kept bit for bit. Thresholds are chosen again on the pooled
    out-of-fold scores (with the run's rhythm fusion, as `trainer fuse` chooses them). `scores` (one per member, from
    `scores_from_file`) spares checking the run's members again."""
    import torch

    from .model import JointEnsemble, JointModelConfig
    from .train import TrainConfig, load_checkpoint

    model, ckpt = load_checkpoint(Path(run) / "checkpoint.pt")
    meta = ckpt["bedside"]
    cfg = BedsideConfig.from_dict(meta["bedside_config"])
    if not cfg.folds:
        raise ValueError(f"{run} is not a cross-fitted run (trainer train --folds)")
    if len(model.members) != len(cfg.folds):
        raise ValueError(f"{run} averages several seed sets per fold; guard each set's run before `trainer combine`")
    if "teacher" in meta:
        raise ValueError(f"{run} was distilled from a teacher; the guard retrains plain members only")
    if guard.cls not in card.abnormal:
        raise ValueError(f"class {guard.cls!r} is not one of the card's {card.abnormal}")
    mcfg = JointModelConfig.from_dict(ckpt["model_config"])
    tcfg = TrainConfig(**{**ckpt["train_config"], "progress": False})
    seeds, epoch_size = list(meta["seeds"]), _epoch_size(Path(run), meta)  # refused before any check or training
    nets = fold_networks(model, cfg)
    if scores is None:
        scores = [training_f1(training_outputs(net, cfg, fold, card, data_dir), card, cfg.margin, guard.cls) for net, fold in nets]
    if len(scores) != len(nets):
        raise ValueError(f"{len(scores)} member scores for {len(nets)} members")

    states = [m.state_dict() for m in model.members]
    history, best_epoch = list(ckpt["history"]), list(ckpt["best_epoch"])
    ds1, extra_seconds, rows = None, 0.0, []
    for k, (_, fold) in enumerate(nets):
        row = {"member": k, "seed": seeds[k], "f1": scores[k], "passed": scores[k] >= guard.min_f1, "tries": []}
        if not row["passed"]:
            if ds1 is None:  # loaded once, and only when a member fails
                ds1 = ds1_windows(cfg, data_dir)
            best = (scores[k], None, None)
            for t in range(1, guard.tries + 1):
                seed = seeds[k] + guard.seed_step * t
                result, _ = train_member(cfg, tcfg, mcfg, ds1, fold, seed, epoch_size)
                f1 = training_f1(training_outputs(result.model.eval(), cfg, fold, card, data_dir), card, cfg.margin, guard.cls)
                extra_seconds += result.seconds
                row["tries"].append({"seed": seed, "f1": f1, "seconds": result.seconds})
                if f1 > best[0]:
                    best = (f1, seed, result)
                if f1 >= guard.min_f1:
                    break
            if best[2] is not None:
                _, seeds[k], result = best
                states[k] = result.model.state_dict()
                history[k] = {"seed": seeds[k], "history": result.history}
                best_epoch[k] = result.best_epoch
        row["kept_seed"] = seeds[k]
        rows.append(row)

    ensemble = JointEnsemble(mcfg, len(states))
    for slot, state in zip(ensemble.members, states):
        slot.load_state_dict(state)
    ensure_dir(out)
    report = {"guard": {**dataclasses.asdict(guard), "members": rows}, "guarded_from": str(run), "guarded_by": command,
              "seeds": seeds, "best_epoch": best_epoch, "train_seconds": float(meta.get("train_seconds", 0.0)) + extra_seconds}
    saved = {**ckpt, "state_dict": ensemble.state_dict(), "history": history, "best_epoch": best_epoch}
    torch.save({**saved, "bedside": {**meta, **report}}, out / "checkpoint.pt")
    fusion, *reference = _fusion_of(meta)
    thresholds, val_metrics = pooled_thresholds(held_out([out / "checkpoint.pt"], data_dir, *reference), fusion)
    report.update(thresholds=thresholds, val_metrics=val_metrics)
    torch.save({**saved, "bedside": {**meta, **report}}, out / "checkpoint.pt")
    trained = json.loads((Path(run) / "metrics.json").read_text()) if (Path(run) / "metrics.json").exists() else {}
    (out / "metrics.json").write_text(json.dumps({**trained, **report, "command": trained.get("command", "")}, indent=2, default=float))
    return report
