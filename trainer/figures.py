"""PNG overlays: the ECG, its attention heat map, the derived intervals and the annotated beats."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stream_ecg.intervals import IntervalRule, attention_to_intervals  # noqa: E402

BEAT_COLOURS = {"N": "tab:green", "V": "tab:red", "A": "tab:orange"}
GRADE_NAMES = {1: "I", 2: "II", 3: "III"}


def plot_overlay(x: np.ndarray, a: np.ndarray, beat_pos, beat_sym, rule: IntervalRule, title: str, path: Path, fs: float = 360.0) -> None:
    """One window: lead traces over the normalised attention heat map, intervals and R peaks marked."""
    t = np.arange(x.shape[-1]) / fs
    norm = a / max(float(a.max()), 1e-12)
    fig, axes = plt.subplots(x.shape[0], 1, figsize=(11, 1.9 * x.shape[0] + 0.6), sharex=True, squeeze=False)
    for lead, ax in enumerate(axes[:, 0]):
        lo, hi = float(x[lead].min()) - 0.5, float(x[lead].max()) + 0.5
        ax.imshow(norm[None, :], aspect="auto", cmap="Reds", vmin=0, vmax=1, extent=(t[0], t[-1], lo, hi), alpha=0.6)
        ax.plot(t, x[lead], color="black", lw=0.7)
        for s, e, _ in attention_to_intervals(a, rule):
            ax.axvspan(s / fs, e / fs, ymin=0.0, ymax=0.06, color="tab:blue")
        for p, s in zip(beat_pos, beat_sym):
            ax.axvline(p / fs, color=BEAT_COLOURS.get(str(s), "tab:gray"), lw=1, ls="--")
            ax.text(p / fs, hi - 0.3, str(s), color=BEAT_COLOURS.get(str(s), "tab:gray"), ha="center", fontsize=8)
        ax.set_ylim(lo, hi)
        ax.set_ylabel(f"lead {lead} (z)")
    axes[-1, 0].set_xlabel("time in window (s); red = attention, blue bars = intervals, dashed = annotated R peaks")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def overlay_examples(data, maps: np.ndarray, grades: np.ndarray, rule: IntervalRule, out: Path, per_grade: int = 2, seed: int = 0) -> list[Path]:
    """A few windows of each grade, PVC and APB mixed, chosen reproducibly."""
    rng = np.random.default_rng(seed)
    paths = []
    for g in (1, 2, 3):
        for cls in (0, 1):
            idx = np.flatnonzero((grades == g) & (data.y == cls))
            for i in rng.choice(idx, size=min(per_grade, len(idx)), replace=False) if len(idx) else []:
                name = f"grade{GRADE_NAMES[g]}_{data.classes[cls]}_{data.record[i]}_{int(data.start[i])}.png"
                title = f"grade {GRADE_NAMES[g]} - {data.classes[cls]} segment, record {data.record[i]} @ sample {int(data.start[i])}"
                plot_overlay(data.x[i], maps[i], data.beat_pos[i], data.beat_sym[i], rule, title, out / name)
                paths.append(out / name)
    return paths
