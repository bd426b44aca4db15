"""Scores on held-out DS1 records through the runtime's own path, straight from a training run.

Model and rule choices (interval rule, thresholds) must be made without DS2. For a run with
one validation set the whole model scores its validation records; for a cross-fitted run each
member scores only the fold it never saw, so the pooled outputs are out-of-fold for all of DS1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stream_ecg.card import ModelCard
from stream_ecg.data import load_record
from stream_ecg.fusion import with_fusion
from stream_ecg.offline import RecordOutput, run_record

from .bedside import BedsideConfig
from .export import Deployable
from .train import load_checkpoint


class CheckpointModel:
    """A network from a checkpoint behind the runtime's `InferenceModel` call (no export needed)."""

    backend = "torch-checkpoint"

    def __init__(self, card: ModelCard, net: torch.nn.Module):
        self.card, self.net = card, Deployable(net, "multilabel")

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            probs, attention = self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return probs.numpy(), attention.numpy()


def held_out_outputs(run: Path, card: ModelCard, data_dir=None) -> list[RecordOutput]:
    """Each held-out DS1 record run by the network that did not train on it, with `card`'s rules."""
    model, ckpt = load_checkpoint(Path(run) / "checkpoint.pt")
    cfg = BedsideConfig.from_dict(ckpt["bedside"]["bedside_config"])
    if cfg.folds:
        pairs = list(zip(model.members, cfg.folds))
    else:
        pairs = [(model, cfg.val_records)]
    outputs = []
    for net, records in pairs:
        runner = with_fusion(CheckpointModel(card, net))
        outputs.extend(run_record(runner, load_record(r, data_dir)) for r in records)
    return outputs
