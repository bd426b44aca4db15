"""Model-ready datasets built with the runtime's own preprocessing (stream_ecg.dsp), cached on disk."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from stream_ecg.data import PaperSegments, build_paper_segments
from stream_ecg.data.segments import CLOSEST_RULE, SegmentRule
from stream_ecg.data.locate import mitdb_dir
from stream_ecg.dsp import DspConfig, normalise_window, preprocess

CACHE = Path("runs/cache")


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def normalise_segments(x: np.ndarray, eps: float) -> np.ndarray:
    """Per-segment z-score over the beats only; the zero padding stays exactly zero.

    z-scoring the padding too would turn it into a constant, and A * constant would let the
    segmenter pass a message to the classifier through the padding instead of pointing at beats.
    """
    out = np.zeros_like(x, dtype=np.float32)
    for i, seg in enumerate(x):
        nz = np.flatnonzero(np.any(seg != 0, axis=0))
        n = int(nz[-1]) + 1 if len(nz) else 0
        if n:
            out[i, :, :n] = normalise_window(seg[:, :n], eps)
    return out


def paper_dataset(
    data_dir: Path | None = None,
    dsp: DspConfig = DspConfig(),
    length: int = 2000,
    rule: SegmentRule = CLOSEST_RULE,
    cache: Path | None = CACHE,
) -> PaperSegments:
    """Paper segments from the whole continuous records filtered by the runtime DSP, z-scored per segment.

    The rule defaults to the reading closest to the paper's counts (at least one normal beat).
    """
    root = Path(data_dir) if data_dir is not None else mitdb_dir()
    path = None if cache is None else cache / f"paper_{_key(str(root.resolve()), dsp.to_dict(), length, repr(rule), 'pad-zero')}.npz"
    if path is not None and path.exists():
        z = np.load(path, allow_pickle=True)
        return PaperSegments(
            x=z["x"], y=z["y"], record=z["record"], start=z["start"], n_beats=z["n_beats"],
            beat_pos=tuple(z["beat_pos"]), beat_sym=tuple(z["beat_sym"]),
        )
    seg = build_paper_segments(data_dir=root, length=length, transform=lambda sig, fs: preprocess(sig, fs, dsp), rule=rule)
    seg = replace(seg, x=normalise_segments(seg.x, dsp.norm_eps))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        bp = np.empty(len(seg.beat_pos), dtype=object)
        bs = np.empty(len(seg.beat_sym), dtype=object)
        bp[:], bs[:] = list(seg.beat_pos), list(seg.beat_sym)
        np.savez(path, x=seg.x, y=seg.y, record=seg.record, start=seg.start, n_beats=seg.n_beats, beat_pos=bp, beat_sym=bs)
    return seg
