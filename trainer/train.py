"""A plain, seeded training loop: class-weighted NLL, Adam, early stopping on a validation split."""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stream_ecg.scoring import auc

from .model import JointEnsemble, JointModel, JointModelConfig


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3  # the paper's 1e-5 x 120 epochs does not fit a CPU session; see docs/results.md
    weight_decay: float = 1e-4
    patience: int = 4  # epochs without a better validation loss before stopping
    seed: int = 0
    threads: int = 2
    progress: bool = True
    # Scale-free sparsity prior on the attention map (its participation ratio, see attention_coverage): still
    # unsupervised, it asks the segmenter to highlight as little of the window as the class needs.
    sparsity: float = 0.0
    cosine: bool = True  # cosine learning-rate decay over the planned epochs
    # "best": keep the epoch with the best validation criterion, stop after `patience` epochs without one.
    # "last": train the whole schedule and keep the end; the validation scores are then untouched by
    # selection (what cross-fitted thresholds need), and are still recorded per epoch.
    select: str = "best"
    # With select="last" the validation scores choose nothing, so scoring them every epoch only costs time (a few
    # minutes of a cross-fitted run): `val_every` N scores every N-th epoch and always the last. The weights
    # are the same either way (an eval-mode pass draws no random numbers and updates no statistics).
    val_every: int = 1

    def __post_init__(self) -> None:
        if self.select not in ("best", "last"):
            raise ValueError(f"select={self.select!r}: best or last")
        if self.val_every < 1 or (self.val_every > 1 and self.select != "last"):
            raise ValueError(f"val_every={self.val_every}: at least 1, and above 1 only with select='last' "
                             "(select='best' chooses its epoch by the validation scores)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: JointModel
    history: list[dict] = field(default_factory=list)
    best_epoch: int | list[int] = 0  # a list for an ensemble, one per member
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1, so rare classes count as much as common ones."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(w / w[w > 0].mean(), dtype=torch.float32)


def attention_coverage(a: torch.Tensor) -> torch.Tensor:
    """Participation ratio (mean A)^2 / mean(A^2) per window: the share of the window the attention
    covers (1 when flat, k/T when k samples are on), scale-free. Unlike mean/max it cannot be gamed
    by one tall peak over a harmless spot with the rest of the map left moderately high."""
    a = a.flatten(1)
    return (a.mean(dim=1).square() / a.square().mean(dim=1).clamp_min(1e-12)).mean()


@torch.no_grad()
def predict_logits(model: JointModel, x: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """Raw logits (n, outputs) and attention maps (n, T) in eval mode."""
    model.eval()
    logits, maps = [], []
    for i in range(0, len(x), batch_size):
        lo, a = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)))
        logits.append(lo)
        maps.append(a[:, 0].numpy())
    return torch.cat(logits), np.concatenate(maps)


def predict(model: JointModel, x: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Softmax class probabilities (n, classes) and attention maps (n, T) in eval mode."""
    logits, maps = predict_logits(model, x, batch_size)
    return torch.softmax(logits, dim=1).numpy(), maps


class Objective:
    """Class-weighted NLL over class indices: the paper's loss."""

    def __init__(self, y_train: np.ndarray, y_val: np.ndarray, n_classes: int):
        self.y_train, self.y_val = torch.from_numpy(y_train), torch.from_numpy(y_val)
        self.weights = class_weights(y_train, n_classes)

    def train_loss(self, logits: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(logits, dim=1), self.y_train[idx], weight=self.weights)

    def val_loss(self, logits: torch.Tensor) -> tuple[float, float]:
        loss = F.nll_loss(F.log_softmax(logits, dim=1), self.y_val, weight=self.weights).item()
        return loss, float((logits.argmax(1) == self.y_val).float().mean())


class MultiLabelObjective:
    """Independent sigmoid per abnormal class (a window may hold S and V); weight 0 marks unknown targets."""

    def __init__(self, y_train, w_train, y_val, w_val, pos_weight: np.ndarray | None = None):
        t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.y_train, self.w_train, self.y_val, self.w_val = t(y_train), t(w_train), t(y_val), t(w_val)
        self.pos_weight = None if pos_weight is None else t(pos_weight)

    def _bce(self, logits, y, w) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(logits, y, weight=w, pos_weight=self.pos_weight, reduction="sum")
        return per / w.sum().clamp_min(1.0)

    def train_loss(self, logits: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return self._bce(logits, self.y_train[idx], self.w_train[idx])

    def soft_loss(self, logits: torch.Tensor, soft: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """Cross-entropy against soft targets (a teacher's probabilities), same weights as the labels."""
        return self._bce(logits, soft, self.w_train[idx])

    def val_score(self, logits: torch.Tensor) -> float:
        """Model selection: mean over classes of the validation AUC on known targets (higher is better).

        The validation loss swings with calibration (training is class-balanced, the monitor is not);
        ranking is what the thresholds chosen afterwards need."""
        aucs = []
        for k in range(self.y_val.shape[1]):
            known = self.w_val[:, k] > 0
            aucs.append(auc(self.y_val[known, k].numpy() > 0, logits[known, k].numpy()))
        return float(np.nanmean(aucs))

    def val_loss(self, logits: torch.Tensor) -> tuple[float, float]:
        pred = (logits > 0).float()
        acc = ((pred == self.y_val).float() * self.w_val).sum() / self.w_val.sum().clamp_min(1.0)
        return self._bce(logits, self.y_val, self.w_val).item(), float(acc)


def train_model(
    model_cfg: JointModelConfig,
    cfg: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    desc: str = "train",
    objective: Objective | MultiLabelObjective | None = None,
    sample_p: np.ndarray | None = None,
    epoch_size: int | None = None,
    teacher: torch.nn.Module | None = None,
    distill: float = 0.5,
) -> TrainResult:
    """Train end-to-end with window labels only; returns the model at its best validation loss
    (or best `objective.val_score`, where the objective has one).

    `sample_p` draws each epoch's `epoch_size` windows with those probabilities (balanced
    sampling); without it every window is seen once per epoch in a fresh order. With a `teacher`
    (multi-label only) the loss mixes in, with weight `distill`, the cross-entropy against the
    teacher's sigmoid outputs on the same augmented batch: one network learns what an ensemble says.
    """
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if teacher is not None:
        teacher.eval()
    rng = np.random.default_rng(cfg.seed)
    x_tr, x_va = train[0], val[0]
    objective = objective or Objective(train[1], val[1], model_cfg.n_classes)
    model = JointModel(model_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = epoch_size or len(x_tr)
    steps = cfg.epochs * max(1, -(-per_epoch // cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cfg.cosine else None
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    history: list[dict] = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(x_tr)) if sample_p is None else rng.choice(len(x_tr), size=per_epoch, p=sample_p)
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"{desc} ep{epoch}", leave=False, disable=not cfg.progress)
        for i in bar:
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            xb = x_tr[idx]
            if augment is not None:
                xb = augment(xb, rng)
            xt = torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32))
            logits, a = model(xt)
            loss = objective.train_loss(logits, idx)
            if teacher is not None:
                with torch.no_grad():
                    soft = torch.sigmoid(teacher(xt)[0])
                loss = (1 - distill) * loss + distill * objective.soft_loss(logits, soft, idx)
            if cfg.sparsity and model.segmenter is not None:
                loss = loss + cfg.sparsity * attention_coverage(a)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / max(seen, 1):.4f}")
        if epoch % cfg.val_every and epoch < cfg.epochs:
            history.append({"epoch": epoch, "train_loss": total / max(seen, 1)})
            continue
        logits_va = predict_logits(model, x_va)[0]
        val_loss, val_acc = objective.val_loss(logits_va)
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss, "val_acc": val_acc})
        criterion = val_loss
        if hasattr(objective, "val_score"):
            history[-1]["val_score"] = objective.val_score(logits_va)
            criterion = -history[-1]["val_score"]
        if cfg.select == "last" or criterion < best[0]:
            best = (criterion, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            break
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model=model, history=history, best_epoch=best[1], seconds=time.perf_counter() - t0)


def save_checkpoint(path, result: TrainResult, model_cfg: JointModelConfig, train_cfg: TrainConfig, extra: dict | None = None) -> None:
    torch.save(
        {
            "model_config": model_cfg.to_dict(),
            "train_config": train_cfg.to_dict(),
            "state_dict": result.model.state_dict(),
            "history": result.history,
            "best_epoch": result.best_epoch,
            "members": len(result.model.members) if isinstance(result.model, JointEnsemble) else 1,
            **(extra or {}),
        },
        path,
    )


def load_checkpoint(path) -> tuple[JointModel | JointEnsemble, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = JointModelConfig.from_dict(ckpt["model_config"])
    members = int(ckpt.get("members", 1))
    model = JointEnsemble(cfg, members) if members > 1 else JointModel(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
