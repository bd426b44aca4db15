"""Shared fixtures: a small, real (untrained) model folder exported through the shipping path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def flat_text(text: str) -> str:
    """CLI output as one line of words: typer's error box frames and wraps long messages at the
    terminal's width, which differs between machines, so a message is matched without the frame."""
    return " ".join("".join(ch for ch in text if ch not in "│╭╮╰╯─").split())


@pytest.fixture
def flat():
    """flat_text, for tests that match a CLI error message."""
    return flat_text


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """ONNX + .pt2 + card.json of a small random-weight bedside-shaped model (MLII, 2000 @ 360 Hz)."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def two_lead_model_dir(tmp_path) -> Path:
    """The same tiny model taking MLII and a chest lead (V1, V2 or V5)."""
    return make_tiny_model(tmp_path / "two", {"MLII": ["II"], "chest": ["V1", "V2", "V5"]})


@pytest.fixture
def fused_model_dir(tmp_path) -> Path:
    """The tiny model with rhythm channels and rhythm fusion on S (weight 20)."""
    return make_tiny_model(tmp_path / "fused", fusion={"S": 20.0})


def make_tiny_model(out: Path, leads: dict[str, list[str]] | None = None, fusion: dict[str, float] | None = None) -> Path:
    """A tiny random-weight model folder taking `leads` (slot -> aliases; default MLII alone); with
    `fusion`, rhythm channels and that rhythm fusion (stream_ecg.fusion)."""
    import torch

    from stream_ecg.dsp import DspConfig
    from stream_ecg.intervals import IntervalRule
    from trainer.export import Deployable, write_model_folder
    from trainer.model import JointModel, JointModelConfig

    torch.manual_seed(0)
    leads = leads or {"MLII": ["II", "ML2", "ECG1", "ECG"]}
    dsp = DspConfig(rhythm=bool(fusion))
    cfg = JointModelConfig(in_leads=dsp.channels(len(leads)), n_classes=2, seg_widths=(4, 8), cls_widths=(4, 8, 8, 8), mlp_hidden=16, decimate=3)
    card = {
        "name": "tiny-test",
        "version": "0.0.0",
        "fs": 360.0,
        "leads": list(leads),
        "lead_aliases": leads,
        "lead_fallback": "first",
        "window": 2000,
        "hop": 360,
        "classes": ["normal", "S", "V"],
        "abnormal": ["S", "V"],
        "thresholds": {"S": 0.5, "V": 0.5},
        "dsp": dsp.to_dict(),
        **({"rhythm_fusion": fusion} if fusion else {}),
        "interval_rule": IntervalRule().to_dict(),
        "model_config": cfg.to_dict(),
    }
    x = np.random.default_rng(0).normal(size=(4, cfg.in_leads, 2000)).astype(np.float32)
    write_model_folder(Deployable(JointModel(cfg), "multilabel"), out, card, x)
    return out
