"""Play WFDB records as live bedside streams over a ZeroMQ PUSH socket, like bed gateways would.

Each bed is one record (records repeat to make more beds, with distinct stream ids). Beds are
staggered by a fraction of a second so their windows do not all fall due at the same instant,
as real monitors would not. Stream time maps to wall time through `speed` (1 = real time,
N = N times faster, 0 = as fast as the socket takes it); every chunk's `sent_at` is that mapping
of the moment its last sample was acquired.
"""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from .data import excerpt_dir, load_record
from .wire import Chunk, encode

__all__ = ["Bed", "ReplayError", "ReplayStats", "load_beds", "replay", "EXCERPT_RECORDS"]

EXCERPT_RECORDS = ("208", "232", "100")


class ReplayError(RuntimeError):
    """The replay could not deliver its chunks; the message says what to check."""


@dataclass(frozen=True)
class Bed:
    """One simulated monitor: a record's signal under its own stream id."""

    stream_id: str
    record: str
    fs: float
    leads: tuple[str, ...]
    signal: np.ndarray  # (n_leads, n_samples) float32 mV


@dataclass(frozen=True)
class ReplayStats:
    chunks: int
    samples: int  # per lead, summed over beds
    bytes: int
    wall_s: float
    stream_s: float  # stream seconds sent per bed


def load_beds(
    records: list[str] | tuple[str, ...] = EXCERPT_RECORDS,
    data_dir: Path | str | None = None,
    beds: int | None = None,
    prefix: str = "bed",
) -> list[Bed]:
    """`beds` beds cycling through `records` (default: one per record) from data_dir or the excerpt."""
    directory = Path(data_dir) if data_dir is not None else excerpt_dir()
    loaded = {name: load_record(name, directory) for name in dict.fromkeys(records)}
    n = len(records) if beds is None else beds
    out = []
    for i in range(n):
        rec = loaded[records[i % len(records)]]
        out.append(Bed(f"{prefix}-{i:03d}-{rec.name}", rec.name, rec.fs, rec.leads, rec.signal))
    return out


def replay(
    endpoint: str,
    beds: list[Bed],
    chunk_ms: float = 250.0,
    speed: float = 1.0,
    seconds: float | None = None,
    loop: bool = False,
    prefill_s: float = 0.0,
    stagger_s: float = 1.0,
    hwm: int = 10_000,
    progress: bool = True,
    stop: threading.Event | None = None,
    send_timeout_s: float = 10.0,
    context: zmq.Context | None = None,
) -> ReplayStats:
    """Push every bed's chunks to `endpoint` on schedule; returns what was sent.

    `seconds` limits the stream time per bed (default: the record; with `loop`, forever until
    `stop`). The first `prefill_s` of each stream are sent at once, so windows flow from the start.
    """
    if speed < 0 or chunk_ms <= 0:
        raise ValueError(f"need speed >= 0 and chunk_ms > 0, got {speed} and {chunk_ms}")
    if not beds:
        raise ValueError("no beds to replay")
    chunk_s = chunk_ms / 1000.0
    limit = [
        seconds if seconds is not None else (float("inf") if loop else b.signal.shape[1] / b.fs) for b in beds
    ]
    if not loop:
        limit = [min(lim, b.signal.shape[1] / b.fs) for lim, b in zip(limit, beds)]
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.SNDTIMEO, int(send_timeout_s * 1000))
    sock.setsockopt(zmq.LINGER, int(send_timeout_s * 1000))
    sock.connect(endpoint)
    finite = all(np.isfinite(limit))
    total = sum(int(np.ceil(lim / chunk_s)) for lim in limit) if finite else None
    bar = _progress(total, progress)
    offsets = [(i / len(beds)) * stagger_s if speed > 0 else 0.0 for i in range(len(beds))]

    def key(i: int, t: float) -> float:
        """When the chunk starting at stream time t is due: a wall offset (or, at max speed, stream time)."""
        return offsets[i] + (min(t + chunk_s, limit[i]) - prefill_s) / speed if speed > 0 else t

    heap = [(key(i, 0.0), i, 0.0, 0) for i in range(len(beds))]
    heapq.heapify(heap)
    chunks = samples = nbytes = 0
    stream_s = 0.0
    t0 = time.time()
    try:
        while heap and not (stop is not None and stop.is_set()):
            due, i, t, seq = heapq.heappop(heap)
            bed = beds[i]
            t_end = min(t + chunk_s, limit[i])
            start, end = int(round(t * bed.fs)), int(round(t_end * bed.fs))
            if speed > 0:
                due += t0
                _sleep_until(due, stop)
            else:
                due = time.time()
            if end > start:
                msg = encode(Chunk(bed.stream_id, seq, start, bed.fs, bed.leads, _take(bed.signal, start, end), due))
                try:
                    sock.send(msg)
                except zmq.Again:
                    raise ReplayError(
                        f"no worker took chunks at {endpoint} for {send_timeout_s:g} s; "
                        "is `stream-ecg serve` running there?"
                    ) from None
                chunks, samples, nbytes = chunks + 1, samples + end - start, nbytes + len(msg)
                stream_s = max(stream_s, t_end)
                bar.update(1)
            if t_end < limit[i]:
                heapq.heappush(heap, (key(i, t_end), i, t_end, seq + 1))
    finally:
        bar.close()
        sock.close()
    return ReplayStats(chunks, samples, nbytes, time.time() - t0, stream_s)


def _take(signal: np.ndarray, start: int, end: int) -> np.ndarray:
    """Samples [start, end) of a record, wrapping around so a bed can loop forever."""
    n = signal.shape[1]
    if end <= n:
        return signal[:, start:end]
    idx = np.arange(start, end) % n
    return signal[:, idx]


def _sleep_until(due: float, stop: threading.Event | None) -> None:
    left = due - time.time()
    if left <= 0:
        return
    if stop is not None:
        stop.wait(left)
    else:
        time.sleep(left)


def _progress(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="chunk", desc="replay", disable=not enabled, leave=False, mininterval=0.5)
