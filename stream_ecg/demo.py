"""The DSP demo: a record cut into gateway-sized chunks, through the wire codec and the streaming DSP."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .data import excerpt_dir, load_record, sliding_windows
from .data.mitdb import AAMI_CLASSES
from .dsp import DspConfig, StreamPreprocessor, normalise_window, preprocess
from .wire import Chunk, decode_chunk, encode


def run_dsp_demo(record: str, data_dir: Path | None, chunk_ms: float, window: int, hop: int) -> dict:
    """Stream `record` chunk by chunk and check it against the batch path; returns a summary."""
    rec = load_record(record, data_dir if data_dir is not None else excerpt_dir())
    cfg = DspConfig()
    step = max(1, int(round(chunk_ms / 1000 * rec.fs)))
    proc = StreamPreprocessor(cfg, rec.fs, len(rec.leads))
    outs, wire_bytes, n_chunks = [], 0, 0
    t0 = time.perf_counter()
    for seq, start in enumerate(range(0, rec.signal.shape[1], step)):
        msg = encode(Chunk(f"demo-{record}", seq, start, rec.fs, rec.leads, rec.signal[:, start : start + step], time.time()))
        wire_bytes += len(msg)
        chunk = decode_chunk(msg)
        last = start + step >= rec.signal.shape[1]
        outs.append(proc.process(chunk.samples, last=last))
        n_chunks += 1
    streamed = np.concatenate(outs, axis=1)
    elapsed = time.perf_counter() - t0
    batch = preprocess(rec.signal, rec.fs, cfg)
    wins = sliding_windows(streamed.shape[1], rec.beats, window=window, hop=hop)
    x = normalise_window(wins.x(streamed), cfg.norm_eps)
    seconds = rec.signal.shape[1] / rec.fs
    summary: dict = {
        "leads": ",".join(rec.leads),
        "duration_s": seconds,
        "chunks": n_chunks,
        "wire_MB": wire_bytes / 1e6,
        "samples_in": int(rec.signal.shape[1]),
        "samples_out": int(streamed.shape[1]),
        "max|stream-batch|_mV": float(np.abs(streamed - batch).max()),
        "x_realtime": seconds / elapsed,
        "windows": len(wins.starts),
        "window_mean_std": float(x.std(axis=-1).mean()),
    }
    for i, cls in enumerate(AAMI_CLASSES):
        summary[f"beats_{cls}"] = int(np.sum(rec.beats.aami() == cls))
        summary[f"windows_with_{cls}"] = int(wins.labels[:, i].sum())
    return summary
