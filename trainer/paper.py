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


def run_paper_experiment(cfg: PaperExperimentConfig, out_dir: Path, data_dir: Path | None, command: str) -> dict:
    """The whole experiment; writes paper_protocol.json, localisation.json and overlay pictures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = paper_dataset(data_dir)
    print(f"paper segments: {int(np.sum(data.y == 0))} PVC, {int(np.sum(data.y == 1))} APB (paper: 2627, 356)", flush=True)
    t0 = time.perf_counter()
    seg_splits = segment_splits(data, cfg.folds, cfg.seed)
    rec_splits = record_splits(data, cfg.folds, cfg.seed)
    report: dict = {"segment_split": {}, "record_split": {}, "kernel_ablation": {}, "details": {}}
    maps: dict[str, np.ndarray] = {}
    for method in cfg.methods:
        base, sparsity = VARIANTS.get(method, (method, 0.0))
        mcfg = JointModelConfig.for_method(base, **cfg.model)
        tcfg = replace(cfg.train, sparsity=sparsity)
        res = cross_validate(data, mcfg, tcfg, seg_splits, by_record=False, label=f"{method}/segment")
        report["segment_split"][method] = res["summary"]
        report["details"][f"segment/{method}"] = res["folds"]
        maps[method] = res["maps"]
        res = cross_validate(data, mcfg, tcfg, rec_splits, by_record=True, label=f"{method}/record")
        report["record_split"][method] = res["summary"]
        report["details"][f"record/{method}"] = res["folds"]
    base_kernel = JointModelConfig(**cfg.model).pool_kernel
    for kernel in cfg.kernels:
        if kernel == base_kernel and "l2" in report["segment_split"]:
            report["kernel_ablation"][str(kernel)] = report["segment_split"]["l2"]
            continue
        mcfg = JointModelConfig.for_method("l2", **{**cfg.model, "pool_kernel": kernel})
        res = cross_validate(data, mcfg, cfg.train, seg_splits, by_record=False, label=f"l2-k{kernel}/segment")
        report["kernel_ablation"][str(kernel)] = res["summary"]
        report["details"][f"kernel/{kernel}"] = res["folds"]
    report["config"] = {
        "model": JointModelConfig.for_method("l2", **cfg.model).to_dict(),
        "train": cfg.train.to_dict(),
        "variants": {k: {"method": v[0], "sparsity": v[1]} for k, v in VARIANTS.items()},
        "folds": cfg.folds,
        "seed": cfg.seed,
        "segments": {"PVC": int(np.sum(data.y == 0)), "APB": int(np.sum(data.y == 1))},
    }
    report["wall_seconds"] = time.perf_counter() - t0
    report["command"] = command
    (out_dir / "paper_protocol.json").write_text(json.dumps(report, indent=2))
    attention_methods = [m for m in maps if VARIANTS.get(m, (m,))[0] in ("l2", "relu_max")]
    if attention_methods:
        loc_all = {}
        for method in attention_methods:
            loc, grades = localisation(data, maps[method], cfg.rule)
            loc_all[method] = loc
            from .figures import overlay_examples

            overlay_examples(data, maps[method], np.asarray(grades), cfg.rule, out_dir / "figures" / method)
        main = "l2_sparse" if "l2_sparse" in loc_all else attention_methods[-1]
        summary = {**loc_all[main], "method": main, "by_method": loc_all, "rule": cfg.rule.to_dict(), "command": command,
                   "split": "segment split, out-of-fold test windows (every segment graded once)"}
        (out_dir / "localisation.json").write_text(json.dumps(summary, indent=2))
    return report


def command_line() -> str:
    return " ".join(["trainer", *sys.argv[1:]]) if sys.argv else "trainer experiment paper"
