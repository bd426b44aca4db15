"""Read a worker's PUB socket: a terminal dashboard per bed, or one JSON object per message.

ZeroMQ topic filters match prefixes ("bed-1" also matches "bed-10"), so the filter narrows what
the socket receives and the topic is then compared exactly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TextIO

import zmq
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .wire import Result, Status, WireError, decode

__all__ = ["Dashboard", "messages", "run_dashboard", "run_jsonl", "to_json"]

log = logging.getLogger(__name__)


def messages(
    endpoint: str,
    stream: str | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    poll_ms: int = 100,
    context: zmq.Context | None = None,
    ready: threading.Event | None = None,
) -> Iterator[Result | Status]:
    """Results and Statuses from `endpoint` (one stream or all) until duration, stop, or the caller breaks."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"" if stream is None else stream.encode("ascii"))
    sock.connect(endpoint)
    if ready is not None:
        ready.set()
    deadline = None if duration is None else time.monotonic() + duration
    warned = False
    try:
        while not (stop is not None and stop.is_set()):
            wait = poll_ms if deadline is None else min(poll_ms, (deadline - time.monotonic()) * 1000)
            if wait <= 0:
                return
            if not sock.poll(max(1, int(wait))):
                continue
            frames = sock.recv_multipart()
            if len(frames) != 2 or (stream is not None and frames[0] != stream.encode("ascii")):
                continue
            try:
                msg = decode(frames[1])
            except WireError as exc:
                if not warned:
                    log.warning("skipping an undecodable message on %s: %s", endpoint, exc)
                    warned = True
                continue
            if isinstance(msg, (Result, Status)):
                yield msg
    finally:
        sock.close()


def to_json(msg: Result | Status) -> dict:
    """A plain dict with a "kind" key, ready for json.dumps."""
    return {"kind": "result" if isinstance(msg, Result) else "status", **asdict(msg)}


def run_jsonl(
    endpoint: str,
    stream: str | None = None,
    out: TextIO | None = None,
    duration: float | None = None,
    max_messages: int | None = None,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> int:
    """Print one JSON object per message (flushed, for piping); returns how many were printed."""
    import sys

    out = out or sys.stdout
    n = 0
    for msg in messages(endpoint, stream, duration, stop, ready=ready):
        out.write(json.dumps(to_json(msg), separators=(",", ":")) + "\n")
        out.flush()
        n += 1
        if max_messages is not None and n >= max_messages:
            break
    return n


@dataclass
class BedView:
    """What the dashboard remembers about one bed."""

    probs: dict[str, float] = field(default_factory=dict)
    alarms: tuple[str, ...] = ()
    located: tuple[str, ...] = ()
    t_end: float = 0.0
    intervals: deque = field(default_factory=lambda: deque(maxlen=4))
    flags: set[str] = field(default_factory=set)
    status: str = ""
    latency_ms: float = 0.0
    results: int = 0


class Dashboard:
    """Per-bed state built from messages; render() draws it as a rich Table."""

    def __init__(self, title: str = "stream-ecg") -> None:
        self.title = title
        self.beds: dict[str, BedView] = {}

    def update(self, msg: Result | Status) -> None:
        bed = self.beds.setdefault(msg.stream_id, BedView())
        if isinstance(msg, Status):
            bed.status = f"{msg.level}: {msg.reason}"
            return
        bed.results += 1
        bed.probs = dict(zip(msg.classes, msg.probs))
        bed.alarms, bed.located = msg.alarms, msg.located
        bed.t_end = msg.t_end
        bed.flags = set(msg.flags) | {f for f in bed.flags if f == "lead_fallback"}
        bed.status = ""
        if "published" in msg.timing and "received" in msg.timing:
            bed.latency_ms = 1000 * (msg.timing["published"] - msg.timing["received"])
        for iv in msg.intervals:
            bed.intervals.append(f"{iv.label} {iv.start / msg.fs:.1f}s {iv.score:.2f}")

    def render(self) -> Table:
        table = Table(title=self.title, expand=False, box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False)
        table.add_column("bed", no_wrap=True)
        table.add_column("t (s)", justify="right", no_wrap=True)
        # one value per line, so that an 80-column terminal shows every probability and interval whole
        table.add_column("probabilities", no_wrap=True)
        table.add_column("abnormal", no_wrap=True, min_width=13)  # label, time in the stream, score
        table.add_column("health", overflow="fold")  # flags one per line; a status message folds
        table.add_column("ms", justify="right", no_wrap=True)  # chunk arrival -> result published
        table.add_column("n", justify="right", no_wrap=True)
        for sid in sorted(self.beds):
            b = self.beds[sid]
            probs = "\n".join(_prob(c, p, c in b.alarms, c in b.located) for c, p in b.probs.items())
            health = b.status or ("\n".join(sorted(b.flags)) if b.flags else "ok")
            style = "red" if b.status.startswith("refused") else ("yellow" if b.flags else "green")
            table.add_row(
                sid, f"{b.t_end:.1f}", probs, "\n".join(b.intervals), f"[{style}]{health}[/]",
                f"{b.latency_ms:.1f}", str(b.results),
            )
        return table


def _prob(cls: str, p: float, alarm: bool, located: bool = True) -> str:
    """Red for a class the window alarms on (its card threshold, which can be far from 0.5), marked ! for no-colour
    terminals; an alarm the window placed at no beat (not in Result.located) is yellow and marked ? instead."""
    if alarm and located:
        return f"[bold red]{cls} {p:.2f} ![/]"
    return f"[yellow]{cls} {p:.2f} ?[/]" if alarm else f"[dim]{cls} {p:.2f}[/]"


def run_dashboard(
    endpoint: str,
    stream: str | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    console: Console | None = None,
    ready: threading.Event | None = None,
) -> Dashboard:
    """Draw the live dashboard until duration or stop; returns the final state."""
    board = Dashboard(f"stream-ecg — {endpoint}" + (f" — {stream}" if stream else ""))
    last = 0.0
    with Live(board.render(), console=console or Console(), refresh_per_second=4, transient=False) as live:
        for msg in messages(endpoint, stream, duration, stop, ready=ready):
            board.update(msg)
            if time.monotonic() - last > 0.25:
                live.update(board.render())
                last = time.monotonic()
        live.update(board.render())
    return board
