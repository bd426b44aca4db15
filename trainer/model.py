"""The joint model: a 1-D U-Net segmenter, large-kernel attention pooling and a CNN classifier.

Read top-down: config, one conv building block, then Segmenter, AttentionPooling, Classifier and
JointModel. The baselines of the paper ("classifier only", "cascaded") are configurations of the
same modules, not copies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Mode = Literal["attention", "cascaded", "classifier_only"]
Pooling = Literal["l2", "relu_max", "none"]


@dataclass(frozen=True)
class JointModelConfig:
    in_leads: int = 2
    n_classes: int = 2
    mode: Mode = "attention"
    pooling: Pooling = "l2"
    pool_kernel: int = 151  # about half a normal beat at 360 Hz
    seg_widths: tuple[int, ...] = (8, 16, 32, 64)  # one U-Net level each; depth = len - 1 down-steps
    seg_kernel: int = 9
    cls_widths: tuple[int, ...] = (16, 32, 64, 128)  # four blocks of 2x Conv-BN-ReLU
    cls_kernel: int = 7
    mlp_hidden: int = 128
    dropout: float = 0.2
    # Segmenter and classifier run at fs / decimate (average pooling in, linear upsampling of the
    # segmenter output back to full rate). After the 40 Hz low-pass, 2-3x loses no ECG content and
    # cuts compute by as much; 1 is the paper's full-rate model.
    decimate: int = 1
    # Trailing input channels the classifier sees as they are, not multiplied by the attention map: the
    # rhythm channels (RR timing painted over every beat), whose information lies in the beats around
    # an ectopic one as much as in it. 0 is the paper's X = A * D on every channel.
    bypass: int = 0
    # Trailing channels after the bypassed ones that stay under attention: the beat residual, which
    # marks the ectopic beat itself, is appended after the rhythm channels (`DspConfig.channels`).
    attended_tail: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.bypass < self.in_leads:
            raise ValueError(f"bypass={self.bypass} must leave at least one of the {self.in_leads} input channels under attention")
        if self.attended_tail < 0 or (self.attended_tail and not self.bypass):
            raise ValueError(f"attended_tail={self.attended_tail} needs bypass > 0 and must be >= 0")
        if self.bypass + self.attended_tail >= self.in_leads:
            raise ValueError(f"bypass={self.bypass} + attended_tail={self.attended_tail} must leave a lead of the "
                             f"{self.in_leads} input channels before them")
        if self.decimate < 1:
            raise ValueError(f"decimate={self.decimate} must be >= 1")
        if self.pool_kernel % 2 == 0:
            raise ValueError(f"pool_kernel={self.pool_kernel} must be odd so the map stays centred")
        if self.mode not in ("attention", "cascaded", "classifier_only"):
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.pooling not in ("l2", "relu_max", "none"):
            raise ValueError(f"unknown pooling {self.pooling!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "JointModelConfig":
        d = dict(d)
        for key in ("seg_widths", "cls_widths"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def for_method(cls, method: str, **overrides) -> "JointModelConfig":
        """The paper's four methods by name: classifier_only, cascaded, relu_max, l2."""
        presets = {
            "classifier_only": dict(mode="classifier_only", pooling="none"),
            "cascaded": dict(mode="cascaded", pooling="none"),
            "relu_max": dict(mode="attention", pooling="relu_max"),
            "l2": dict(mode="attention", pooling="l2"),
        }
        if method not in presets:
            raise ValueError(f"unknown method {method!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[method], **overrides})

    @classmethod
    def paper_size(cls, **overrides) -> "JointModelConfig":
        """The authors' released configuration: U-Net 32-64-128-256, kernel 5, 3 down-steps."""
        base = dict(seg_widths=(32, 64, 128, 256), seg_kernel=5, cls_widths=(32, 64, 128, 128), cls_kernel=5)
        return cls(**{**base, **overrides})


class ConvBnAct(nn.Sequential):
    """Conv1d -> BatchNorm -> ReLU, length-preserving; the one building block used everywhere."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__(
            nn.Conv1d(c_in, c_out, k, padding=k // 2, bias=False),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
        )


def double_conv(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(ConvBnAct(c_in, c_out, k), ConvBnAct(c_out, c_out, k))


class Segmenter(nn.Module):
    """1-D U-Net mapping (B, leads, T) to one channel (B, 1, T) for any T."""

    def __init__(self, cfg: JointModelConfig):
        super().__init__()
        w, k = cfg.seg_widths, cfg.seg_kernel
        self.down = nn.ModuleList([double_conv(cfg.in_leads, w[0], k)])
        self.down.extend(double_conv(w[i - 1], w[i], k) for i in range(1, len(w)))
        self.up = nn.ModuleList(nn.ConvTranspose1d(w[i], w[i - 1], 2, stride=2) for i in range(len(w) - 1, 0, -1))
        self.merge = nn.ModuleList(double_conv(2 * w[i - 1], w[i - 1], k) for i in range(len(w) - 1, 0, -1))
        self.head = nn.Conv1d(w[0], 1, 1)
        self.steps = len(w) - 1
        self.decimate = cfg.decimate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = x.shape[-1]
        if self.decimate > 1:
            x = F.avg_pool1d(x, self.decimate, ceil_mode=True)
        t = x.shape[-1]
        mult = 2**self.steps
        pad = (-t) % mult
        if pad:
            x = F.pad(x, (0, pad))
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool1d(skips[-1], 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        out = self.head(x)[..., :t]
        if self.decimate > 1:
            out = F.interpolate(out, scale_factor=float(self.decimate), mode="linear", align_corners=False)[..., :full]
        return out


class AttentionPooling(nn.Module):
    """Turns the segmenter's channel into a smooth, window-style attention map of the same length.

    l2: sqrt of the zero-padded windowed sum of squares (kept in fp32: it overflows fp16);
    relu_max: ReLU then max pooling; none: the channel as it is.
    """

    def __init__(self, kind: Pooling, kernel: int):
        super().__init__()
        self.kind, self.kernel = kind, kernel

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        k = self.kernel
        if self.kind == "l2":
            sq = s.float().square()
            summed = F.avg_pool1d(sq, k, stride=1, padding=k // 2, count_include_pad=True) * k
            return torch.sqrt(summed + 1e-8).to(s.dtype)
        if self.kind == "relu_max":
            return F.max_pool1d(F.relu(s), k, stride=1, padding=k // 2)
        return s


class Classifier(nn.Module):
    """1x1 conv, four blocks of 2x Conv-BN-ReLU with 2x downsampling, global average pooling, MLP."""

    def __init__(self, cfg: JointModelConfig, in_channels: int):
        super().__init__()
        w, k = cfg.cls_widths, cfg.cls_kernel
        self.stem = nn.Conv1d(in_channels, w[0], 1)
        self.decimate = cfg.decimate
        self.blocks = nn.ModuleList(double_conv(w[max(i - 1, 0)], w[i], k) for i in range(len(w)))
        self.mlp = nn.Sequential(
            nn.Linear(w[-1], cfg.mlp_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.mlp_hidden, cfg.mlp_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.mlp_hidden, cfg.n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.decimate > 1:
            x = F.avg_pool1d(x, self.decimate, ceil_mode=True)
        x = self.stem(x)
        for block in self.blocks:
            x = F.max_pool1d(block(x), 2, ceil_mode=True)
        return self.mlp(x.mean(dim=-1))


class JointModel(nn.Module):
    """Returns (logits, attention map A of shape (B, 1, T)); A is all ones without a segmenter."""

    def __init__(self, cfg: JointModelConfig):
        super().__init__()
        self.cfg = cfg
        self.segmenter = Segmenter(cfg) if cfg.mode != "classifier_only" else None
        self.pooling = AttentionPooling(cfg.pooling, cfg.pool_kernel)
        self.classifier = Classifier(cfg, in_channels=1 if cfg.mode == "cascaded" else cfg.in_leads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.segmenter is None:
            return self.classifier(x), torch.ones_like(x[:, :1])
        # No attention where the input is exactly zero on every lead (zero padding, lead-off): a
        # peak there would be free, and would let the segmenter game the sparsity prior.
        a = self.pooling(self.segmenter(x)) * (x != 0).any(dim=1, keepdim=True).to(x.dtype)
        if self.cfg.mode == "cascaded":
            return self.classifier(a), a
        if self.cfg.bypass:
            end = x.shape[1] - self.cfg.attended_tail
            k = end - self.cfg.bypass
            return self.classifier(torch.cat([a * x[:, :k], x[:, k:end], a * x[:, end:]], dim=1)), a
        return self.classifier(a * x), a


class JointEnsemble(nn.Module):
    """Joint models of the same config trained from different seeds; logits and attention maps are averaged.

    On held-out patients single seeds disagree widely (docs/results.md); their average is steadier.
    The average of unsupervised attention maps is still an unsupervised segmentation.
    """

    def __init__(self, cfg: JointModelConfig, members: int):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(JointModel(cfg) for _ in range(members))

    @classmethod
    def of(cls, cfg: JointModelConfig, nets: list[nn.Module]) -> "JointEnsemble":
        """An ensemble over already-trained members (shared, not copied)."""
        ensemble = cls(cfg, 0)
        ensemble.members = nn.ModuleList(nets)
        return ensemble.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m(x) for m in self.members]
        return torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)


def count_flops(cfg: JointModelConfig, length: int = 2000) -> int:
    """Multiply-accumulates x2 of the conv and linear layers for one window (BN/ReLU ignored)."""
    model = JointModel(cfg).eval()
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, (nn.Conv1d, nn.ConvTranspose1d)):
            c_in = mod.in_channels // mod.groups
            total += 2 * c_in * mod.kernel_size[0] * out.shape[1] * out.shape[2]
        elif isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, cfg.in_leads, length))
    for h in handles:
        h.remove()
    return total


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "AttentionPooling",
    "Classifier",
    "ConvBnAct",
    "JointEnsemble",
    "JointModel",
    "JointModelConfig",
    "Segmenter",
    "count_flops",
    "n_params",
]
