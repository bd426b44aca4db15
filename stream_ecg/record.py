"""Write published intervals as WFDB annotation files, one per stream, for PhysioNet's tools.

Each interval becomes one beat annotation at its centre, in model-rate samples with `fs` stored
in the file, so `rdann` and `bxb` (against the reference `.atr`, resampled if the rates differ)
can score the worker's output like any other beat detector's.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from .subscribe import messages
from .wire import Result, Status

__all__ = ["AAMI_TO_WFDB", "AnnotationRecorder", "run_record"]

# An AAMI class -> the WFDB beat code that stands for it in MIT-BIH style annotations.
AAMI_TO_WFDB = {"V": "V", "S": "A", "F": "F", "Q": "Q", "N": "N"}


@dataclass
class _Beats:
    fs: float
    samples: list[int] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)


class AnnotationRecorder:
    """Collects interval centres per stream from Results; write() puts one file per stream."""

    def __init__(self) -> None:
        self.streams: dict[str, _Beats] = {}

    def add(self, msg: Result | Status) -> None:
        if not isinstance(msg, Result):
            return
        beats = self.streams.setdefault(msg.stream_id, _Beats(msg.fs))
        for iv in msg.intervals:
            beats.samples.append((iv.start + iv.end - 1) // 2)
            beats.symbols.append(AAMI_TO_WFDB.get(iv.label, "Q"))

    def write(self, out_dir: Path | str, extension: str = "sea") -> dict[str, Path]:
        """One `<stream>.<extension>` per stream that had any interval; returns stream id -> path."""
        if not extension.isalpha():
            raise ValueError(f"WFDB annotation extensions are letters only, got {extension!r}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        for sid, beats in self.streams.items():
            if not beats.samples:
                continue
            order = np.argsort(beats.samples, kind="stable")
            name = record_name(sid)
            wfdb.wrann(
                name,
                extension,
                np.asarray(beats.samples, dtype=np.int64)[order],
                symbol=[beats.symbols[i] for i in order],
                fs=beats.fs,
                write_dir=str(out_dir),
            )
            written[sid] = out_dir / f"{name}.{extension}"
        return written


def record_name(stream_id: str) -> str:
    """A WFDB record name (letters, digits, - and _) for a stream id."""
    return re.sub(r"[^-\w]", "_", stream_id)


def run_record(
    endpoint: str,
    out_dir: Path | str,
    stream: str | None = None,
    extension: str = "sea",
    duration: float | None = None,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> dict[str, Path]:
    """Subscribe until duration or stop (or Ctrl-C), then write the annotation files."""
    rec = AnnotationRecorder()
    try:
        for msg in messages(endpoint, stream, duration, stop, ready=ready):
            rec.add(msg)
    except KeyboardInterrupt:
        pass
    return rec.write(out_dir, extension)
