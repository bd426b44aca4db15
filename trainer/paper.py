"""The paper's MIT-BIH experiment: PVC vs APB segments, 5-fold CV, four methods, kernel ablation,
localisation graded against the beat annotations.

Every number goes to `docs/results/*.json` together with the command that produced it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from stream_ecg.data import PaperSegments
from stream_ecg.intervals import IntervalRule, attention_to_intervals
from stream_ecg.scoring import GradeCounts, binary_metrics, grade_window, mean_std

from .datasets import paper_dataset
from .model import JointModelConfig
from .train import TrainConfig, predict, train_model

METHODS = ("classifier_only", "cascaded", "relu_max", "l2")
# Our unsupervised variant beside the paper's four: L2 pooling plus the attention sparsity prior.
VARIANTS = {"l2_sparse": ("l2", 1.0)}
# The model every method shares here: a small U-Net and classifier at 1/3 rate inside (see docs/results.md).
PAPER_MODEL = dict(seg_widths=(4, 8, 16, 32), cls_widths=(8, 16, 32, 64), decimate=3)
METRICS = ("accuracy", "sensitivity", "specificity", "auc")
ABNORMAL = ("V", "A")


@dataclass(frozen=True)
class PaperExperimentConfig:
    methods: tuple[str, ...] = (*METHODS, *VARIANTS)
    kernels: tuple[int, ...] = (75, 151, 201, 301)
    folds: int = 5
    seed: int = 0
    model: dict = field(default_factory=lambda: dict(PAPER_MODEL))  # JointModelConfig overrides shared by every method
    train: TrainConfig = TrainConfig()
    rule: IntervalRule = IntervalRule()


def segment_splits(data: PaperSegments, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over segments, as in the paper (a patient may sit in train and test)."""
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(skf.split(np.zeros(len(data.y)), data.y))


def record_splits(data: PaperSegments, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds by record: no patient in both train and test."""
    sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(sgkf.split(np.zeros(len(data.y)), data.y, groups=data.record))


def _validation_split(y: np.ndarray, groups: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about a sixth of the training part for early stopping (by record when grouped)."""
    if groups is None:
        tr, va = next(StratifiedKFold(n_splits=6, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    else:
        tr, va = next(StratifiedGroupKFold(n_splits=6, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
    return tr, va


def cross_validate(
    data: PaperSegments,
    model_cfg: JointModelConfig,
    train_cfg: TrainConfig,
    splits: list[tuple[np.ndarray, np.ndarray]],
    by_record: bool,
    label: str,
) -> dict:
    """Train one model per fold; returns per-fold metrics and the out-of-fold probabilities and maps."""
    folds, probs, maps = [], np.zeros((len(data.y), model_cfg.n_classes), np.float32), np.zeros((len(data.y), data.x.shape[-1]), np.float32)
    for k, (tr, te) in enumerate(splits):
        sub_tr, sub_va = _validation_split(data.y[tr], data.record[tr] if by_record else None, train_cfg.seed + k)
        tr_idx, va_idx = tr[sub_tr], tr[sub_va]
        result = train_model(
            model_cfg,
            replace(train_cfg, seed=train_cfg.seed + k),
            (data.x[tr_idx], data.y[tr_idx]),
            (data.x[va_idx], data.y[va_idx]),
            desc=f"{label} fold{k + 1}",
        )
        p, a = predict(result.model, data.x[te])
        probs[te], maps[te] = p, a
        m = binary_metrics(data.y[te], p[:, 0], positive=0)
        m.update(best_epoch=result.best_epoch, seconds=result.seconds, n_test=int(len(te)))
        folds.append(m)
        print(f"  {label} fold {k + 1}: " + " ".join(f"{key}={m[key]:.4f}" for key in METRICS) + f" ({result.seconds:.0f} s)", flush=True)
    summary = {key: mean_std([f[key] for f in folds]) for key in METRICS}
    return {"summary": summary, "folds": folds, "probs": probs, "maps": maps}


def localisation(data: PaperSegments, maps: np.ndarray, rule: IntervalRule, idx: np.ndarray | None = None) -> tuple[dict, list[int]]:
    """Grade I/II/III of the attention intervals against annotated R peaks; returns summary and per-window grade."""
    total = GradeCounts()
    grades = []
    for i in range(len(maps)) if idx is None else idx:
        intervals = attention_to_intervals(maps[i], rule)
        sym, pos = data.beat_sym[i], data.beat_pos[i]
        g = grade_window(intervals, pos[np.isin(sym, ABNORMAL)], pos[sym == "N"])
        total = total + g
        grades.append(1 if g.grade_i else 2 if g.grade_ii else 3)
    return total.summary(), grades


def _jobs(cfg: PaperExperimentConfig) -> list[tuple[str, str]]:
    """(section, key) in the order they run: the paper's table first, then the ablation, then record folds."""
    base_kernel = JointModelConfig(**cfg.model).pool_kernel
    jobs = [("segment_split", m) for m in cfg.methods]
    jobs += [("kernel_ablation", str(k)) for k in cfg.kernels if k != base_kernel]
    jobs += [("record_split", m) for m in cfg.methods]
    return jobs


def _config_dict(cfg: PaperExperimentConfig, data: PaperSegments) -> dict:
    return {
        "model": JointModelConfig.for_method("l2", **cfg.model).to_dict(),
        "train": cfg.train.to_dict(),
        "variants": {k: {"method": v[0], "sparsity": v[1]} for k, v in VARIANTS.items()},
        "folds": cfg.folds,
        "seed": cfg.seed,
        "segments": {"PVC": int(np.sum(data.y == 0)), "APB": int(np.sum(data.y == 1))},
    }


def run_paper_experiment(cfg: PaperExperimentConfig, out_dir: Path, data_dir: Path | None, command: str) -> dict:
    """The whole experiment; writes paper_protocol.json after every cross-validation (so an interrupted
    run resumes where it stopped, with the same configuration), localisation.json and overlay pictures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = paper_dataset(data_dir)
    print(f"paper segments: {int(np.sum(data.y == 0))} PVC, {int(np.sum(data.y == 1))} APB (paper: 2627, 356)", flush=True)
    seg_splits = segment_splits(data, cfg.folds, cfg.seed)
    rec_splits = record_splits(data, cfg.folds, cfg.seed)
    path = out_dir / "paper_protocol.json"
    config = _config_dict(cfg, data)
    report: dict = {"segment_split": {}, "record_split": {}, "kernel_ablation": {}, "details": {}, "wall_seconds": 0.0}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("config") == config:
            report = old
            print("resuming: " + ", ".join(f"{s}/{k}" for s, k in _jobs(cfg) if k in old.get(s, {})), flush=True)
    report.update(config=config, command=command)
    base_kernel = JointModelConfig(**cfg.model).pool_kernel
    maps_dir = out_dir / "maps"
    for section, key in _jobs(cfg):
        if key in report[section]:
            continue
        t0 = time.perf_counter()
        if section == "kernel_ablation":
            mcfg, tcfg = JointModelConfig.for_method("l2", **{**cfg.model, "pool_kernel": int(key)}), cfg.train
        else:
            base, sparsity = VARIANTS.get(key, (key, 0.0))
            mcfg, tcfg = JointModelConfig.for_method(base, **cfg.model), replace(cfg.train, sparsity=sparsity)
        splits = rec_splits if section == "record_split" else seg_splits
        res = cross_validate(data, mcfg, tcfg, splits, by_record=section == "record_split", label=f"{key}/{section}")
        report[section][key] = res["summary"]
        report["details"][f"{section}/{key}"] = res["folds"]
        if section == "segment_split" and mcfg.mode == "attention":
            maps_dir.mkdir(exist_ok=True)
            np.save(maps_dir / f"{key}.npy", res["maps"].astype(np.float16))
        if section == "segment_split" and key == "l2" and str(base_kernel) in [str(k) for k in cfg.kernels]:
            report["kernel_ablation"][str(base_kernel)] = res["summary"]
        report["wall_seconds"] += time.perf_counter() - t0
        report["complete"] = all(k in report[s] for s, k in _jobs(cfg))
        path.write_text(json.dumps(report, indent=2))
        write_localisation(data, cfg, out_dir, command)
    return report


def write_localisation(data: PaperSegments, cfg: PaperExperimentConfig, out_dir: Path, command: str) -> None:
    """localisation.json and overlay figures from the saved out-of-fold attention maps."""
    from .figures import overlay_examples

    loc_all = {}
    for method in cfg.methods:
        f = out_dir / "maps" / f"{method}.npy"
        if not f.exists():
            continue
        maps = np.load(f).astype(np.float32)
        loc, grades = localisation(data, maps, cfg.rule)
        loc_all[method] = loc
        if not (out_dir / "figures" / method).exists():
            overlay_examples(data, maps, np.asarray(grades), cfg.rule, out_dir / "figures" / method)
    if loc_all:
        main = "l2_sparse" if "l2_sparse" in loc_all else next(iter(loc_all))
        summary = {**loc_all[main], "method": main, "by_method": loc_all, "rule": cfg.rule.to_dict(), "command": command,
                   "split": "segment split, out-of-fold test windows (every segment graded once)"}
        (out_dir / "localisation.json").write_text(json.dumps(summary, indent=2))


def command_line() -> str:
    return " ".join(["trainer", *sys.argv[1:]]) if sys.argv else "trainer experiment paper"
