"""The bedside model: continuous sliding windows, inter-patient (train on DS1, judge on DS2).

Windows are cut exactly as the runtime cuts them (`stream_ecg.offline`): the card's lead, the
card's DSP over the whole record as one chunk, per-window z-score. Targets are per abnormal class
(S, V; multi-label, so a window may hold both): 1 when a beat of the class has its R peak at least
`margin` samples inside the window, unknown (weight 0) when one only sits in the margins, where
half a beat is visible. F beats make the V target unknown unless a V beat is also present.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal

from stream_ecg.card import LeadContract
from stream_ecg.data import load_record
from stream_ecg.data.mitdb import DS1, Record
from stream_ecg.dsp import DspConfig, normalise_window, window_input
from stream_ecg.intervals import IntervalRule
from stream_ecg.offline import model_input, window_starts
from stream_ecg.rhythm import STREAM_CONTEXT
from stream_ecg.scoring import detection_metrics, window_targets

ABNORMAL = ("S", "V")
CLASSES = ("normal", *ABNORMAL)
# Held out of DS1 for early stopping and threshold choice: S and V beats from three patients.
VAL_RECORDS = ("118", "119", "220", "223")
# Cross-fitting (`--folds`): DS1 in four record folds, one member per fold trained on the other three, so
# every DS1 record is a validation record for exactly one member and thresholds rest on all 22 patients'
# out-of-fold scores instead of four. Grouped by hand so each fold holds about a quarter of DS1's S and V
# beats (only 8 records carry S) and the two records with atrial fibrillation (201, 203) sit apart.
FOLDS = (
    ("209", "208", "114", "101", "115", "230"),
    ("201", "220", "106", "112", "122"),
    ("207", "118", "203", "109", "205"),
    ("223", "124", "119", "215", "116", "108"),
)
# Names a stream may give each lead the model can take. "chest" is any precordial lead: MIT-BIH's second
# lead is V1 in most records and V2, V4 or V5 in the rest, so the model learns it as one slot.
LEAD_ALIASES = {
    "MLII": ("II", "ML2", "MLII", "ECG1", "ECG", "ECG 1", "LEAD II", "D2"),
    "chest": ("V1", "V2", "V5", "V4", "V3", "V6", "ECG2", "ECG 2"),
}


@dataclass(frozen=True)
class BedsideConfig:
    window: int = 2000
    hop: int = 360  # 1 s at 360 Hz: the runtime's hop
    margin: int = 72  # 0.2 s: an R peak closer to the edge than this is an unknown target
    dsp: DspConfig = DspConfig()
    train_hop: int = 180  # denser windows for training (more shifted views), same window
    rule: IntervalRule = IntervalRule()
    val_records: tuple[str, ...] = VAL_RECORDS
    model: dict = field(default_factory=dict)
    folds: tuple[tuple[str, ...], ...] = ()  # non-empty: cross-fitted members, val_records unused
    leads: tuple[str, ...] = ("MLII",)  # slots of LEAD_ALIASES the model takes, in channel order
    missing_p: float = 0.1  # with a second slot: share of training windows whose chest slot holds MLII again
    lead_dropout: float = 0.0  # share of training windows whose ECG leads are zeroed, the derived channels kept
    stretch: tuple[float, ...] = ()  # per factor, DS1 replayed that many times slower as extra training windows
    stretch_hop: int = 720  # hop of the stretched copies' windows (training only, never validation)
    # > 0: within each third of an epoch (S, V, the rest) a record's share goes as its window count to the power
    # 1 - record_balance instead of the count itself (0: as drawn, 1: every record alike), so a few records' ectopy
    # (209's S windows) does not make up most of what the network learns of a class (balanced_p)
    record_balance: float = 0.0

    @property
    def lead_contract(self) -> LeadContract:
        """How the runtime and the trainer pick this model's leads from a stream's or record's lead names."""
        return LeadContract(leads=self.leads, aliases={k: LEAD_ALIASES[k] for k in self.leads}, fallback="first")

    @property
    def validation(self) -> tuple[tuple[str, ...], ...]:
        """Held-out records per member: the folds, or the validation records for every member."""
        return self.folds or (self.val_records,)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dsp"], d["rule"] = self.dsp.to_dict(), self.rule.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BedsideConfig":
        """The config a checkpoint recorded (`to_dict`), so export and analysis cut windows as training did."""
        return cls(**{**d, "dsp": DspConfig.from_dict(d["dsp"]), "rule": IntervalRule.from_dict(d["rule"]),
                      "val_records": tuple(d["val_records"]), "folds": tuple(tuple(f) for f in d.get("folds", ())),
                      "leads": tuple(d.get("leads", ("MLII",))), "stretch": tuple(d.get("stretch", ()))})

    def __post_init__(self) -> None:
        if not 0.0 <= self.record_balance <= 1.0:
            raise ValueError(f"record_balance={self.record_balance} must lie in [0, 1]")
        if any(not 0.5 <= f <= 2.0 or f == 1.0 for f in self.stretch) or self.stretch_hop < 1:
            raise ValueError(f"stretch factors must lie in [0.5, 2] and differ from 1, got {self.stretch}; stretch_hop >= 1")


@dataclass(frozen=True)
class WindowSet:
    x: np.ndarray  # (n, leads, window) float32, z-scored per window
    y: np.ndarray  # (n, 2) float32 targets for S, V
    w: np.ndarray  # (n, 2) float32 target weights (0 = unknown)
    record: np.ndarray
    start: np.ndarray
    stretch: np.ndarray | None = None  # (n,) the factor each window's record was replayed at (1: as recorded)

    def __post_init__(self) -> None:
        if self.stretch is None:
            object.__setattr__(self, "stretch", np.ones(len(self.start), np.float32))


def stretched(rec: Record, factor: float) -> Record:
    """The record replayed `factor` times slower (resampled to that many times its length at the same rate, the
    annotations moved with it): wider QRS complexes at a slower rate, or narrower at a faster one, labels intact."""
    f = Fraction(factor).limit_denominator(20)
    signal = scipy.signal.resample_poly(rec.signal, f.numerator, f.denominator, axis=1).astype(np.float32)
    beats = dataclasses.replace(rec.beats, samples=np.round(rec.beats.samples * float(f)).astype(np.int64))
    return dataclasses.replace(rec, signal=signal, beats=beats)


def record_windows(name: str, cfg: BedsideConfig, hop: int, data_dir=None, stretch: float = 1.0) -> WindowSet:
    rec = load_record(name, data_dir)
    if stretch != 1.0:
        rec = stretched(rec, stretch)
    sig, _ = model_input(cfg.lead_contract, cfg.dsp, rec)
    starts = window_starts(sig.shape[1], cfg.window, hop)
    beats = np.round(rec.beats.samples * cfg.dsp.fs / rec.fs).astype(np.int64)
    aami = rec.beats.aami()
    ys, ws = [], []
    for cls in ABNORMAL:
        core = window_targets(starts, cfg.window, beats, aami, cls, cfg.margin)
        anywhere = window_targets(starts, cfg.window, beats, aami, cls, 0)
        unknown = anywhere & ~core
        if cls == "V":
            unknown |= window_targets(starts, cfg.window, beats, aami, "F", 0) & ~core
        ys.append(core)
        ws.append(~unknown)
    idx = starts[:, None] + np.arange(cfg.window)[None, :]
    # with dsp.rhythm_context the windows form one stream at the training hop: each sees the RR history a
    # live stream would have built by then (the same beats; the runtime hop only changes which window adds them)
    x = window_input(np.transpose(sig[:, idx], (1, 0, 2)), cfg.dsp, starts)
    return WindowSet(
        x=x.astype(np.float32),
        y=np.stack(ys, 1).astype(np.float32),
        w=np.stack(ws, 1).astype(np.float32),
        record=np.full(len(starts), name),
        start=starts,
        stretch=np.full(len(starts), stretch, np.float32),
    )


def concat(parts: list[WindowSet]) -> WindowSet:
    return WindowSet(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(WindowSet)))


def select(ws: WindowSet, keep: np.ndarray) -> WindowSet:
    return WindowSet(*(getattr(ws, f.name)[keep] for f in dataclasses.fields(WindowSet)))


def ds1_windows(cfg: BedsideConfig, data_dir=None, workers: int = 2) -> WindowSet:
    """Every DS1 record at the dense training hop (the runtime-hop windows are a subset of them), then with
    `cfg.stretch` each record replayed at each factor, at `cfg.stretch_hop`. Records are cut in `workers`
    processes (the same windows, in the same order: each record is a pure function of its file)."""
    if cfg.hop % cfg.train_hop:
        raise ValueError(f"hop {cfg.hop} must be a multiple of train_hop {cfg.train_hop}: validation windows come from its grid")
    jobs = [(r, cfg.train_hop, 1.0) for r in DS1] + [(r, cfg.stretch_hop, f) for f in cfg.stretch for r in DS1]
    return concat(windows_of(jobs, cfg, data_dir, workers))


def windows_of(jobs: list[tuple[str, int, float]], cfg: BedsideConfig, data_dir=None, workers: int = 2) -> list[WindowSet]:
    """`record_windows` of each (record, hop, stretch), in order; in `workers` spawned processes when above 1 (DSP and
    R-peak detection are single-threaded numpy: a few minutes of a training run on one core)."""
    if workers <= 1 or len(jobs) < 2:
        return [record_windows(r, cfg, hop, data_dir, f) for r, hop, f in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may already hold torch's thread pools, which a forked child must not inherit
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_record_job, [(r, cfg, hop, data_dir, f) for r, hop, f in jobs]))


def _record_job(job: tuple) -> WindowSet:
    name, cfg, hop, data_dir, stretch = job
    return record_windows(name, cfg, hop, data_dir, stretch)


def split(ds1: WindowSet, held_out: tuple[str, ...], hop: int) -> tuple[WindowSet, WindowSet]:
    """DS1 minus the held-out records (dense hop, and their stretched copies) and the held-out records as recorded
    (runtime hop)."""
    out = np.isin(ds1.record, held_out)
    return select(ds1, ~out), select(ds1, out & (ds1.start % hop == 0) & (ds1.stretch == 1.0))


def balanced_p(y: np.ndarray, record: np.ndarray | None = None, record_balance: float = 0.0) -> np.ndarray:
    """Sampling probabilities giving S windows, V windows and the rest a third of each epoch each. With
    `record_balance` > 0 (and each window's `record`), a record's share of its group's third goes as n ** (1 -
    record_balance) for its n windows in that group, spread evenly over them."""
    groups = np.where(y[:, 0] > 0, 0, np.where(y[:, 1] > 0, 1, 2))
    if record_balance > 0:
        if record is None:
            raise ValueError("record_balance needs each window's record")
        _, cell = np.unique(np.stack([groups.astype(str), np.asarray(record).astype(str)]), axis=1, return_inverse=True)
        cell = cell.ravel()
        n_cell = np.bincount(cell).astype(float)
        share = n_cell ** (1.0 - record_balance)  # the cell's weight within its group
        group_of_cell = np.zeros(len(n_cell), dtype=int)
        group_of_cell[cell] = groups
        share = share / np.bincount(group_of_cell, weights=share, minlength=3)[group_of_cell]
        p = share[cell] / n_cell[cell]
        return p / p.sum()
    counts = np.bincount(groups, minlength=3).astype(float)
    p = 1.0 / np.maximum(counts[groups], 1)
    return p / p.sum()


def augment(x: np.ndarray, rng: np.random.Generator, leads: int = 1, eps: float = DspConfig().norm_eps,
            missing_p: float = 0.0, lead_dropout: float = 0.0) -> np.ndarray:
    """Noise, baseline wander and amplitude/polarity-preserving gain on the ECG leads, then the same
    z-score again; rhythm channels after the first `leads` pass through (they were computed clean).
    With several leads, a `missing_p` share of windows get the first lead in every other slot: what
    the lead contract serves from a one-lead stream. A `lead_dropout` share of windows lose their ECG
    leads (zeros) and keep the derived channels (rhythm, residual): a training-only regulariser that
    makes the network read a beat against its neighbours, not only by its shape."""
    x, rest = x[:, :leads], x[:, leads:]
    n, _, t = x.shape
    tt = np.arange(t)[None, None, :]
    wander = rng.uniform(0, 0.4, (n, 1, 1)) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5, (n, 1, 1)) * tt / 360 + rng.uniform(0, 6.3, (n, 1, 1)))
    noise = rng.normal(0, 1, x.shape) * rng.uniform(0, 0.15, (n, 1, 1))
    gain = rng.uniform(0.8, 1.25, (n, 1, 1))
    ecg = normalise_window((x * gain + wander + noise).astype(np.float32), eps)
    if leads > 1 and missing_p > 0:  # after the noise: the runtime copies the one lead, noise and all
        gone = rng.random(n) < missing_p
        ecg[gone, 1:] = ecg[gone, :1]
    if lead_dropout > 0 and rest.shape[1]:
        ecg[rng.random(n) < lead_dropout] = 0.0
    return np.concatenate([ecg, rest], axis=1) if rest.shape[1] else ecg


def best_threshold(truth: np.ndarray, score: np.ndarray, beta: float = 1.0) -> float:
    """The probability threshold that maximises F-beta on validation windows."""
    # 0.01 steps, plus tails spaced in logit steps of 0.5: an ensemble of sigmoids can sit well below 0.05, and a
    # rhythm-fused logit (stream_ecg.fusion) well above 0.99
    tail = 1.0 / (1.0 + np.exp(-np.arange(5.0, 14.01, 0.5)))
    grid = np.concatenate([1.0 - tail[::-1], np.round(np.arange(0.01, 0.995, 0.01), 2), tail])
    best, best_f = 0.5, -1.0
    for t in grid:
        pred = score >= t
        tp = np.sum(pred & truth)
        p = tp / max(pred.sum(), 1)
        r = tp / max(truth.sum(), 1)
        f = (1 + beta**2) * p * r / max(beta**2 * p + r, 1e-12)
        if f > best_f:
            best, best_f = float(t), float(f)
    return best


def ensure_dir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def train_bedside(cfg: BedsideConfig, train_cfg, out: Path, data_dir=None, epoch_size: int = 12000,
                  seeds: tuple[int, ...] | None = None, teacher: Path | None = None, distill: float = 0.5) -> dict:
    """Train on DS1, one member per seed (several make an averaging ensemble), or with `cfg.folds` one
    member per fold, each held out of its own member; pick thresholds on the held-out windows (pooled
    out-of-fold scores when cross-fitted) and save a checkpoint. With `teacher` (a bedside checkpoint
    trained with the same inputs and validation records) each member also learns the teacher's outputs."""
    import torch

    from .model import JointEnsemble, JointModelConfig
    from .train import TrainResult, load_checkpoint, predict_logits, save_checkpoint

    teachers = None
    if teacher is not None:
        teacher_net, tck = load_checkpoint(teacher)
        tcfg = BedsideConfig.from_dict(tck["bedside"]["bedside_config"])
        if tcfg.dsp != cfg.dsp or tcfg.validation != cfg.validation:
            raise ValueError(f"teacher {teacher} was trained with other inputs or validation records; distillation "
                             "would leak the validation records or learn from a different view of the ECG")
        # cross-fitted: member k learns only from the teacher's network that never saw fold k, or fold k's
        # patients would reach member k through the teacher and its out-of-fold scores would not be
        teachers = [net for net, _ in fold_networks(teacher_net, tcfg)] if cfg.folds else [teacher_net]

    folds = cfg.validation
    seeds = tuple(seeds) if seeds else tuple(train_cfg.seed + k for k in range(len(folds))) if cfg.folds else (train_cfg.seed,)
    if cfg.folds and len(seeds) != len(folds):
        raise ValueError(f"cross-fitting trains one member per fold: {len(folds)} folds, {len(seeds)} seeds")
    mcfg = JointModelConfig(**{"in_leads": cfg.dsp.channels(len(cfg.leads)), "n_classes": len(ABNORMAL), **cfg.model})
    names = (*cfg.leads, *cfg.dsp.extra_channels)
    end = len(names) - mcfg.attended_tail
    if mcfg.bypass and not set(names[end - mcfg.bypass : end]) <= set(cfg.dsp.rhythm_channels):
        raise ValueError(f"bypass={mcfg.bypass}, attended_tail={mcfg.attended_tail} would pass {names[end - mcfg.bypass : end]} "
                         f"unattended; only rhythm channels {cfg.dsp.rhythm_channels} may bypass (inputs: {names})")
    ds1 = ds1_windows(cfg, data_dir)
    members, held = [], []
    for k, seed in enumerate(seeds):
        member, val = train_member(cfg, train_cfg, mcfg, ds1, folds[k % len(folds)], seed, epoch_size,
                                   teacher=teachers[k % len(teachers)] if teachers else None, distill=distill)
        members.append(member)
        held.append(val)
    if len(members) == 1:
        result = members[0]
    else:
        ensemble = JointEnsemble(mcfg, len(members))
        for slot, member in zip(ensemble.members, members):
            slot.load_state_dict(member.model.state_dict())
        result = TrainResult(
            model=ensemble.eval(),
            history=[{"seed": s, "history": m.history} for s, m in zip(seeds, members)],
            best_epoch=[m.best_epoch for m in members],
            seconds=sum(m.seconds for m in members),
        )
    if cfg.folds:  # each window scored by the one member that never saw its patient
        val = concat(held)
        logits = torch.cat([predict_logits(m.model, v.x)[0] for m, v in zip(members, held)])
    else:
        val = held[0]
        logits = predict_logits(result.model, val.x)[0]
    p_val = torch.sigmoid(logits).numpy()
    thresholds, val_metrics = {}, {}
    for k, cls in enumerate(ABNORMAL):
        known = val.w[:, k] > 0
        thresholds[cls] = best_threshold(val.y[known, k] > 0, p_val[known, k])
        val_metrics[cls] = detection_metrics(val.y[known, k] > 0, p_val[known, k], thresholds[cls])
    ensure_dir(out)
    trained_on = [~np.isin(ds1.record, folds[k % len(folds)]) for k in range(len(folds))]
    n_train = [int(t.sum()) for t in trained_on]
    counts = [{c: int(ds1.y[t, k].sum()) for k, c in enumerate(ABNORMAL)} for t in trained_on]
    meta = {
        "bedside_config": cfg.to_dict(),
        "thresholds": thresholds,
        "val_metrics": val_metrics,
        "validation": "out-of-fold (each record scored by the member that held it out)" if cfg.folds else "ensemble on val_records",
        "train_windows": n_train if cfg.folds else n_train[0],
        "val_windows": int(len(val.y)),
        "train_counts": counts if cfg.folds else counts[0],
        "val_counts": {c: int(val.y[:, k].sum()) for k, c in enumerate(ABNORMAL)},
        "train_seconds": result.seconds,
        "best_epoch": result.best_epoch,
        "seeds": list(seeds),
        "epoch_size": epoch_size,
        **({"teacher": str(teacher), "distill": distill} if teacher is not None else {}),
    }
    save_checkpoint(out / "checkpoint.pt", result, mcfg, train_cfg, extra={"bedside": meta})
    return {**meta, "history": result.history}


def train_member(cfg: BedsideConfig, train_cfg, mcfg, ds1: WindowSet, held_out: tuple[str, ...], seed: int,
                 epoch_size: int, teacher=None, distill: float = 0.5):
    """One member trained on DS1 without the `held_out` records (validated on them); returns (TrainResult, validation
    windows). Seeded and deterministic on CPU, so `trainer guard` can retrain one member of a run exactly as
    `trainer train` trained it."""
    from .train import MultiLabelObjective, train_model

    train, val = split(ds1, held_out, cfg.hop)
    result = train_model(
        mcfg, dataclasses.replace(train_cfg, seed=seed), (train.x, train.y), (val.x, val.y),
        augment=functools.partial(augment, leads=len(cfg.leads), eps=cfg.dsp.norm_eps, missing_p=cfg.missing_p,
                                  lead_dropout=cfg.lead_dropout), desc=f"bedside seed {seed}",
        objective=MultiLabelObjective(train.y, train.w, val.y, val.w), sample_p=balanced_p(train.y, train.record, cfg.record_balance),
        epoch_size=epoch_size,
        teacher=teacher, distill=distill,
    )
    return result, val


def known_scores(ws: WindowSet, logits: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets and scores of class `j` on the windows whose target is known (weight > 0)."""
    known = ws.w[:, j] > 0
    return ws.y[known, j] > 0, np.asarray(logits)[known, j]


def member_spread(checkpoint: Path, records: str = "DS2", data_dir=None) -> dict:
    """Window AUC per class of each ensemble member and of the whole ensemble on the given records."""
    import torch

    from stream_ecg.data.mitdb import DS2
    from stream_ecg.fusion import logit_offsets, rr_prematurity
    from stream_ecg.scoring import auc

    from .model import JointEnsemble
    from .train import load_checkpoint, predict_logits

    model, ckpt = load_checkpoint(checkpoint)
    d = ckpt["bedside"]["bedside_config"]
    cfg = BedsideConfig.from_dict(d)
    if records == "VAL" and cfg.folds:
        return out_of_fold(model, cfg, data_dir)
    names = DS2 if records == "DS2" else tuple(d["val_records"]) if records == "VAL" else tuple(records.split(","))
    ws = concat([record_windows(r, cfg, cfg.hop, data_dir) for r in names])
    nets = list(model.members) if isinstance(model, JointEnsemble) else [model]
    seeds = ckpt["bedside"].get("seeds", [None] * len(nets))

    fusion = ckpt["bedside"].get("fusion", {})  # a fused run (trainer fuse): score what it serves
    offset = logit_offsets(fusion, ABNORMAL, rr_prematurity(ws.x, len(cfg.leads))) if fusion else 0.0

    def aucs(logits: torch.Tensor) -> dict:
        return {c: auc(*known_scores(ws, logits.numpy() + offset, k)) for k, c in enumerate(ABNORMAL)}

    rows = [{"seed": s, "window_auc": aucs(predict_logits(n, ws.x)[0])} for s, n in zip(seeds, nets)]
    return {"records": list(names), "members": rows, "ensemble": {"window_auc": aucs(predict_logits(model, ws.x)[0])},
            "windows": int(len(ws.y)), "margin_samples": cfg.margin, "rhythm_fusion": fusion}


def fold_networks(model, cfg: BedsideConfig) -> list[tuple[object, tuple[str, ...]]]:
    """Each record fold of a cross-fitted run with the network that never saw it: its member, or for a
    combined run (`combine_runs`, member i holds out fold i mod folds) the average of its members that
    held the fold out, one per seed set, as the served ensemble averages them."""
    from .model import JointEnsemble

    nets, n = list(model.members), len(cfg.folds)
    if not cfg.folds or len(nets) % n:
        raise ValueError(f"{len(nets)} members do not cross-fit {n} folds")
    if len(nets) == n:
        return list(zip(nets, cfg.folds))
    return [(JointEnsemble.of(model.cfg, nets[k::n]), fold) for k, fold in enumerate(cfg.folds)]


def held_out_logits(model, cfg: BedsideConfig, data_dir=None):
    """Yield (record, fold, windows, logits): each DS1 record scored by the cross-fitted network that held it out."""
    from .train import predict_logits

    for k, (net, fold) in enumerate(fold_networks(model, cfg)):
        for r in fold:
            ws = record_windows(r, cfg, cfg.hop, data_dir)
            yield r, k, ws, predict_logits(net, ws.x)[0].numpy()


@dataclass(frozen=True)
class HeldOut:
    """Out-of-fold logits of several cross-fitted runs with the same folds, record by record."""

    records: tuple[str, ...]
    fold: dict[str, int]  # record -> index of the fold (member) that held it out
    y: dict[str, np.ndarray]  # record -> (n, 2) targets, runtime-hop windows
    w: dict[str, np.ndarray]  # record -> (n, 2) target weights
    logits: list[dict[str, np.ndarray]]  # per run: record -> (n, 2) logits
    prem: dict[str, np.ndarray]  # record -> (n,) rr prematurity of each window (stream_ecg.fusion; 0 without rhythm channels)

    def pooled(self, subset: tuple[int, ...], j: int, fusion: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Known targets, mean logit over the runs in `subset` (with a rhythm `fusion`, as the runtime
        fuses it), and each window's record, pooled over DS1."""
        from stream_ecg.fusion import logit_offsets

        ys, ss, rs = [], [], []
        for r in self.records:
            known = self.w[r][:, j] > 0
            logits = np.mean([self.logits[i][r] for i in subset], 0) + logit_offsets(fusion or {}, ABNORMAL, self.prem[r])
            ys.append(self.y[r][known, j] > 0)
            ss.append(logits[known, j])
            rs.append(np.full(int(known.sum()), r))
        return np.concatenate(ys), np.concatenate(ss), np.concatenate(rs)

    def singles_and_all(self) -> list[tuple[int, ...]]:
        """Each run alone, then (with several) all of them averaged."""
        n = len(self.logits)
        return [(i,) for i in range(n)] + ([tuple(range(n))] if n > 1 else [])


def held_out(checkpoints: list[Path], data_dir=None, reference: str = "median", context: int = STREAM_CONTEXT,
             centre: str = "median") -> HeldOut:
    """Score every DS1 record with each run's member that held it out (the runs must share their folds); each
    window's rr prematurity is taken against `reference` (`stream_ecg.fusion.rr_prematurity`; "stream": the `centre`
    of the record's RRs over the last `context` samples, as a live stream of it would hold them)."""
    from .train import load_checkpoint

    from stream_ecg.fusion import rr_prematurity  # per window, from its rr_prev channel
    from stream_ecg.rhythm import RecentRhythm, stream_references

    logits, fold, y, w, prem, starts, folds = [], {}, {}, {}, {}, {}, None
    for ck in checkpoints:
        model, ckpt = load_checkpoint(ck)
        cfg = BedsideConfig.from_dict(ckpt["bedside"]["bedside_config"])
        if not cfg.folds:
            raise ValueError(f"{ck} is not a cross-fitted run (trainer train --folds)")
        if folds is not None and cfg.folds != folds:
            raise ValueError(f"{ck} holds out other record folds than {checkpoints[0]}; its members cannot be averaged")
        folds, run = cfg.folds, {}
        for r, k, ws, lg in held_out_logits(model, cfg, data_dir):
            if not np.array_equal(starts.setdefault(r, ws.start), ws.start):
                raise ValueError(f"{ck} cuts record {r} into other windows than {checkpoints[0]}")
            fold[r], y[r], w[r], run[r] = k, ws.y, ws.w, lg
            if r not in prem:
                refs = (stream_references(ws.x[:, 0], ws.start, cfg.dsp.fs, cfg.dsp.peak_detector, RecentRhythm(context, cfg.dsp.fs),
                                          centre) if reference == "stream" else None)
                prem[r] = (rr_prematurity(ws.x, len(cfg.leads), reference, cfg.dsp.fs, cfg.dsp.peak_detector, refs) if cfg.dsp.rhythm
                           else np.zeros(len(ws.y)))
        logits.append(run)
    return HeldOut(tuple(sorted(y)), fold, y, w, logits, prem)


def ensemble_size(checkpoints: list[Path], data_dir=None) -> dict:
    """Pooled out-of-fold window AUC of the mean logit of k cross-fitted runs, for every subset of k runs.

    Runs with the same record folds hold each record out once each, so averaging their members'
    logits on it is a k-member ensemble scored on patients none of its members saw.
    """
    from itertools import combinations

    from stream_ecg.scoring import auc

    ho = held_out(checkpoints, data_dir)
    by_k = []
    for k in range(1, len(ho.logits) + 1):
        subsets = [{"runs": list(sub), "auc": {c: auc(*ho.pooled(sub, j)[:2]) for j, c in enumerate(ABNORMAL)}}
                   for sub in combinations(range(len(ho.logits)), k)]
        mean = {c: float(np.mean([s["auc"][c] for s in subsets])) for c in ABNORMAL}
        by_k.append({"k": k, "mean_auc": mean, "subsets": subsets})
    folds = [[r for r in ho.records if ho.fold[r] == k] for k in range(max(ho.fold.values()) + 1)]
    return {"runs": [str(c.parent) for c in checkpoints], "folds": folds, "by_size": by_k}


def _f1(se: float, precision: float) -> float:
    return 2 * se * precision / (se + precision) if se + precision > 0 else 0.0


def _at(truth: np.ndarray, prob: np.ndarray, threshold: float) -> dict:
    m = detection_metrics(truth, prob, threshold)
    return {"threshold": threshold, "se": m["se"], "precision": m["precision"], "f1": _f1(m["se"], m["precision"])}


def transfer(y: np.ndarray, p: np.ndarray, fold: np.ndarray, rec: np.ndarray, fixed: tuple[str, ...]) -> dict:
    """Window scores at max-F1 thresholds chosen in-sample, leave-one-fold-out, and on the `fixed` records only."""
    lofo, chosen = np.zeros(len(y), bool), []
    for k in np.unique(fold):
        chosen.append(best_threshold(y[fold != k], p[fold != k]))
        lofo[fold == k] = p[fold == k] >= chosen[-1]
    tp, fp, fn = int(np.sum(lofo & y)), int(np.sum(lofo & ~y)), int(np.sum(~lofo & y))
    se, pr = tp / max(tp + fn, 1), tp / max(tp + fp, 1)
    inside = np.isin(rec, fixed)
    return {
        "in_sample": _at(y, p, best_threshold(y, p)),
        "leave_one_fold_out": {"thresholds": chosen, "se": se, "precision": pr, "f1": _f1(se, pr)},
        "fixed_records": {"records": list(fixed), "on_the_rest": _at(y[~inside], p[~inside], best_threshold(y[inside], p[inside])),
                          "best_for_the_rest": _at(y[~inside], p[~inside], best_threshold(y[~inside], p[~inside]))},
    }


def threshold_transfer(checkpoints: list[Path], data_dir=None, fixed: tuple[str, ...] = VAL_RECORDS) -> dict:
    """How well a max-F1 window threshold chosen on some DS1 patients holds on others, per class.

    For each cross-fitted run alone and for the mean of all of them, on out-of-fold scores: the
    threshold chosen on all records (in-sample, what `trainer train --folds` ships); chosen on three
    folds and applied to the fourth (leave-one-fold-out, summed over the folds); and chosen on the
    `fixed` records alone (the shipped recipe's four validation records) and applied to the rest,
    beside the best threshold for the rest (what the fixed records should have found).
    """
    from stream_ecg.scoring import auc

    ho = held_out(checkpoints, data_dir)
    rows = []
    for sub in ho.singles_and_all():
        row = {"runs": [str(checkpoints[i].parent) for i in sub]}
        for j, c in enumerate(ABNORMAL):
            y, s, rec = ho.pooled(sub, j)
            row[c] = {"auc": auc(y, s), **transfer(y, 1.0 / (1.0 + np.exp(-s)), np.array([ho.fold[r] for r in rec]), rec, fixed)}
        rows.append(row)
    return {"rows": rows, "windows": "runtime hop, known targets only; thresholds maximise window F1 (trainer.bedside.best_threshold)"}


IRREGULAR_DS1 = ("201", "203")  # DS1's irregular-rhythm records (atrial fibrillation and flutter)


def fusion_gain(checkpoints: list[Path], weights: tuple[float, ...], data_dir=None,
                group: tuple[str, ...] = IRREGULAR_DS1) -> dict:
    """Pooled out-of-fold S window AUC of each cross-fitted run (and of their mean) with `weight` x the
    window's rr prematurity added to its S logit (`stream_ecg.fusion`), for each weight; 0 is the network alone.
    The same over the `group` records' windows alone: a timing score can help on regular rhythms and hurt on irregular ones."""
    from stream_ecg.scoring import auc

    ho = held_out(checkpoints, data_dir)
    j = ABNORMAL.index("S")
    y, _, rec = ho.pooled((0,), j)
    prem = np.concatenate([ho.prem[r][ho.w[r][:, j] > 0] for r in ho.records])
    inside = np.isin(rec, group)

    rows = []
    for sub in ho.singles_and_all():
        scores = {str(wt): ho.pooled(sub, j, {"S": wt})[1] for wt in (0.0, *weights)}
        rows.append({"runs": [str(checkpoints[i].parent) for i in sub],
                     "auc_by_weight": {k: auc(y, s) for k, s in scores.items()},
                     "group_auc_by_weight": {k: auc(y[inside], s[inside]) for k, s in scores.items()}})
    return {"class": "S", "prematurity_alone_auc": auc(y, prem), "weights": list(weights), "rows": rows,
            "records": list(ho.records), "group": list(group), "group_windows": int(inside.sum()),
            "group_positives": int(y[inside].sum())}


def pooled_thresholds(ho: HeldOut, fusion: dict[str, float] | None = None) -> tuple[dict, dict]:
    """Per class, the max-F1 threshold on one run's pooled out-of-fold probabilities (with `fusion` as served),
    and the window metrics there."""
    thresholds, val_metrics = {}, {}
    for j, c in enumerate(ABNORMAL):
        y, s, _ = ho.pooled((0,), j, fusion)
        p = 1.0 / (1.0 + np.exp(-s))
        thresholds[c] = best_threshold(y, p)
        val_metrics[c] = detection_metrics(y, p, thresholds[c])
    return thresholds, val_metrics


def fuse_run(run: Path, weight: float, out: Path, command: str = "", data_dir=None, reference: str = "median",
             context: int = STREAM_CONTEXT, centre: str = "median") -> dict:
    """A copy of cross-fitted `run` whose S logit takes `weight` x rr prematurity (`stream_ecg.fusion`) against
    `reference`, with both thresholds chosen again by max F1 on the pooled out-of-fold fused scores."""
    import json

    import torch

    from .train import load_checkpoint

    _, ckpt = load_checkpoint(run / "checkpoint.pt")
    fusion = {"S": float(weight)}
    thresholds, val_metrics = pooled_thresholds(held_out([run / "checkpoint.pt"], data_dir, reference, context, centre), fusion)
    meta = {**ckpt["bedside"], "thresholds": thresholds, "val_metrics": val_metrics, "fusion": fusion,
            "prematurity_reference": reference,
            **({"prematurity_context": context, "prematurity_centre": centre} if reference == "stream" else {}),
            "fused_from": str(run), "fused_by": command}
    ensure_dir(out)
    torch.save({**ckpt, "bedside": meta}, out / "checkpoint.pt")
    trained = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    report = {k: meta[k] for k in ("thresholds", "val_metrics", "fusion", "prematurity_reference", "prematurity_centre",
                                   "fused_from", "fused_by") if k in meta}
    (out / "metrics.json").write_text(json.dumps({**trained, **report, "command": trained.get("command", "")}, indent=2, default=float))
    return report


def _fusion_of(meta: dict) -> tuple[dict | None, str, int, str]:
    """A run's rhythm fusion and its prematurity reference as `held_out` takes it: (fusion, reference, context,
    centre); context and centre are the defaults unless the reference is "stream", and an unfused run's reference is
    "median"."""
    fusion = meta.get("fusion")
    reference = meta.get("prematurity_reference", "median") if fusion else "median"
    if reference != "stream":
        return fusion, reference, STREAM_CONTEXT, "median"
    return fusion, reference, int(meta.get("prematurity_context", STREAM_CONTEXT)), str(meta.get("prematurity_centre", "median"))


def combine_runs(runs: list[Path], out: Path, command: str = "", data_dir=None) -> dict:
    """One cross-fitted run from several trained with the same recipe on other seed sets: all their members
    averaged (run after run, so member i holds out fold i mod folds), thresholds chosen again by max F1 on the
    pooled out-of-fold scores, where each record is scored by the average of the members that held it out. Fused
    runs combine when all fuse alike (weight and reference), and the whole keeps their fusion."""
    import json

    import torch

    from .model import JointEnsemble
    from .train import load_checkpoint

    if len(runs) < 2:
        raise ValueError("combine needs at least two runs")
    loaded = [load_checkpoint(Path(r) / "checkpoint.pt") for r in runs]
    first = loaded[0][1]
    for r, (_, ck) in zip(runs, loaded):
        cfg = BedsideConfig.from_dict(ck["bedside"]["bedside_config"])
        if not cfg.folds or int(ck.get("members", 1)) != len(cfg.folds):
            raise ValueError(f"{r} is not a plain cross-fitted run (trainer train --folds)")
        if ck["bedside"]["bedside_config"] != first["bedside"]["bedside_config"] or ck["model_config"] != first["model_config"]:
            raise ValueError(f"{r} was trained with another recipe than {runs[0]} (bedside or model config differ); "
                             "only seed sets of one recipe can be combined")
        if _fusion_of(ck["bedside"]) != _fusion_of(first["bedside"]):
            raise ValueError(f"{r} fuses rhythm otherwise than {runs[0]}; combine runs fused alike (or none fused)")
    ensemble = JointEnsemble.of(loaded[0][0].cfg, [m for model, _ in loaded for m in model.members])
    metas = [ck["bedside"] for _, ck in loaded]
    fusion, *reference = _fusion_of(first["bedside"])
    per_run = ("guard", "guarded_from", "guarded_by", "fused_from", "fused_by")  # one run's provenance, not the whole's
    meta = {**{k: v for k, v in metas[0].items() if k not in per_run}, "seeds": [s for m in metas for s in m["seeds"]], "train_seconds": sum(m["train_seconds"] for m in metas),
            "best_epoch": [e for m in metas for e in m["best_epoch"]], "combined_from": [str(r) for r in runs],
            "combined_by": command,
            "validation": "out-of-fold (each record scored by the mean of the members, one per run, that held it out)"}
    ckpt = {**first, "state_dict": ensemble.state_dict(), "members": len(ensemble.members),
            "history": [ck["history"] for _, ck in loaded], "best_epoch": meta["best_epoch"], "bedside": meta}
    ensure_dir(out)
    torch.save(ckpt, out / "checkpoint.pt")
    thresholds, val_metrics = pooled_thresholds(held_out([out / "checkpoint.pt"], data_dir, *reference), fusion)
    meta = {**meta, "thresholds": thresholds, "val_metrics": val_metrics}
    torch.save({**ckpt, "bedside": meta}, out / "checkpoint.pt")
    commands = [json.loads((Path(r) / "metrics.json").read_text()).get("command", "") if (Path(r) / "metrics.json").exists() else ""
                for r in runs]
    steps = [[m[k] for k in ("fused_by", "guarded_by") if m.get(k)] for m in metas]  # what each run went through after training
    report = {k: meta[k] for k in ("thresholds", "val_metrics", "seeds", "train_seconds", "combined_from", "combined_by")}
    (out / "metrics.json").write_text(json.dumps({**report, "trained_by": commands, "then_by": steps, "command": command}, indent=2, default=float))
    return report


def causal_median(x: np.ndarray, n: int) -> np.ndarray:
    """Median of the last `n` values up to and including each position (what a live stream could know)."""
    return np.array([np.median(x[max(0, i - n + 1) : i + 1]) for i in range(len(x))], dtype=np.float64)


def stream_prematurity(ws: WindowSet, fs: float, history_size: int = 256, detector: str = "energy") -> np.ndarray:
    """Per window of one record (runtime hop, in order): -log(shortest RR in the window / the stream's recent
    median RR, `stream_ecg.rhythm.RRHistory`), a hand-made S score with no learning; 0 where it is unknown."""
    from stream_ecg.rhythm import RRHistory, r_peaks

    history, out = RRHistory(history_size, fs), np.zeros(len(ws.start))
    for k, (start, lead) in enumerate(zip(ws.start, ws.x[:, 0])):
        peaks = r_peaks(lead, fs, detector)
        history.update(peaks, int(start), lead.shape[-1])
        ref = history.reference()
        if peaks.size > 1 and ref:
            out[k] = -np.log(np.diff(peaks).min() / ref)
    return out


def out_of_fold(model, cfg: BedsideConfig, data_dir=None, centre_windows: int = 300) -> dict:
    """A cross-fitted run's members on the records they held out, record by record: window AUC and the
    mean logit per class (how far a patient the member never saw shifts its calibration). Pooled over
    all records it also gives the AUC of the logits centred on each record's causal running median over
    `centre_windows` windows: how much of the pooled failure is a per-patient offset, and the AUC of
    `stream_prematurity`, a learning-free S score, to set the network's against."""
    from stream_ecg.scoring import auc

    rows, pooled = [], {c: {"y": [], "raw": [], "centred": [], "rr": []} for c in ABNORMAL}
    for r, k, ws, logits in held_out_logits(model, cfg, data_dir):
        row = {"member": k, "record": r, "windows": int(len(ws.y))}
        centred = logits - np.stack([causal_median(logits[:, j], centre_windows) for j in range(len(ABNORMAL))], 1)
        rr = np.repeat(stream_prematurity(ws, cfg.dsp.fs, detector=cfg.dsp.peak_detector)[:, None], len(ABNORMAL), 1)
        for j, c in enumerate(ABNORMAL):
            y, raw = known_scores(ws, logits, j)
            row[c] = {"positives": int(y.sum()), "auc": auc(y, raw) if 0 < y.sum() < len(y) else None,
                      "mean_logit": float(raw.mean())}
            pooled[c]["y"].append(y)
            pooled[c]["raw"].append(raw)
            pooled[c]["centred"].append(known_scores(ws, centred, j)[1])
            pooled[c]["rr"].append(known_scores(ws, rr, j)[1])
        rows.append(row)
    summary = {c: {"auc": auc(np.concatenate(v["y"]), np.concatenate(v["raw"])),
                   "auc_centred": auc(np.concatenate(v["y"]), np.concatenate(v["centred"])),
                   "auc_rr_prematurity": auc(np.concatenate(v["y"]), np.concatenate(v["rr"]))} for c, v in pooled.items()}
    return {"folds": [list(f) for f in cfg.folds], "out_of_fold": rows, "pooled": summary,
            "centre_windows": centre_windows, "margin_samples": cfg.margin}
