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

from .model import JointModel, JointModelConfig


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
    # Scale-free sparsity prior on the attention map (mean of A / max A per window): still
    # unsupervised, it asks the segmenter to highlight as little of the window as the class needs.
    sparsity: float = 0.0
    cosine: bool = True  # cosine learning-rate decay over the planned epochs

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: JointModel
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
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
    """Mean of A / max A per window: the share of the window the attention highlights, scale-free."""
    return (a / a.amax(dim=-1, keepdim=True).clamp_min(1e-6)).mean()


@torch.no_grad()
def predict(model: JointModel, x: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (n, classes) and attention maps (n, T) in eval mode."""
    model.eval()
    probs, maps = [], []
    for i in range(0, len(x), batch_size):
        logits, a = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))
        probs.append(torch.softmax(logits, dim=1).numpy())
        maps.append(a[:, 0].numpy())
    return np.concatenate(probs), np.concatenate(maps)


def _val_loss(model: JointModel, x: np.ndarray, y: np.ndarray, weights: torch.Tensor) -> tuple[float, float]:
    probs, _ = predict(model, x)
    logp = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
    loss = F.nll_loss(logp, torch.from_numpy(y), weight=weights).item()
    return loss, float((probs.argmax(1) == y).mean())


def train_model(
    model_cfg: JointModelConfig,
    cfg: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train end-to-end with class labels only; returns the model at its best validation loss."""
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    x_tr, y_tr = train
    model = JointModel(model_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, -(-len(x_tr) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cfg.cosine else None
    weights = class_weights(y_tr, model_cfg.n_classes)
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    history: list[dict] = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(x_tr))
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"{desc} ep{epoch}", leave=False, disable=not cfg.progress)
        for i in bar:
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            xb = x_tr[idx]
            if augment is not None:
                xb = augment(xb, rng)
            logits, a = model(torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)))
            loss = F.nll_loss(F.log_softmax(logits, dim=1), torch.from_numpy(y_tr[idx]), weight=weights)
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
        val_loss, val_acc = _val_loss(model, val[0], val[1], weights)
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss, "val_acc": val_acc})
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
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
            **(extra or {}),
        },
        path,
    )


def load_checkpoint(path) -> tuple[JointModel, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = JointModel(JointModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
