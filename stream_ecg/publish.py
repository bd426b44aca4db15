"""Inferred windows -> `wire.Result` messages on a ZeroMQ PUB socket, topic = stream id.

Intervals are shifted to absolute samples and passed through the stream's `IntervalMerger`, so
a beat seen by several overlapping windows is published once, by the first window that saw it (with the card's
`interval_rule.confirm` > 1, by the window that saw it that many times).
Each stream gets the same topic for its Results and its Status messages (e.g. a refusal).
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np
import zmq

from .batcher import Inferred
from .card import ModelCard
from .postprocess import IntervalMerger, located_classes, window_alarms
from .wire import Interval, Result, Status, WireError, encode

__all__ = ["Publisher", "alarms", "build_result"]

log = logging.getLogger(__name__)


def build_result(card: ModelCard, item: Inferred, merger: IntervalMerger, published: float) -> Result:
    """The Result for one window; `merger` is the stream's and remembers what was published."""
    w = item.window
    fresh = merger.add([iv.shift(w.start) for iv in item.intervals])
    timing = {"received": w.received, "enqueued": item.enqueued, "inferred": item.inferred, "published": published}
    if w.sent_at > 0:
        timing["sent"] = w.sent_at
    # Wall time of stream sample 0, from the chunk that completed the window: an interval's
    # wall time is stream_t0 + start / fs.
    timing["stream_t0"] = (w.sent_at if w.sent_at > 0 else w.received) - w.chunk_end / card.fs
    return Result(
        stream_id=w.stream_id,
        window_start=w.start,
        window_end=w.start + card.window,
        fs=card.fs,
        t_start=w.start / card.fs,
        t_end=(w.start + card.window) / card.fs,
        model_id=card.name,
        model_version=card.version,
        classes=card.classes,
        # float32 softmax can land a hair above 1; the wire insists on 0..1.
        probs=tuple(float(p) for p in np.clip(item.probs, 0.0, 1.0)),
        intervals=tuple(Interval(iv.start, iv.end, iv.label, iv.score) for iv in fresh),
        flags=w.flags,
        timing=timing,
        alarms=alarms(card, item.probs),
        located=located_classes(card, item.intervals),  # labelled intervals come only from alarmed classes
    )


def alarms(card: ModelCard, probs: np.ndarray) -> tuple[str, ...]:
    """One window's alarmed classes, as the interval rules see them (postprocess.window_alarms)."""
    return tuple(c for c, on in zip(card.abnormal, window_alarms(card, np.asarray(probs)[None])[0]) if on)


class Publisher:
    """Owns the PUB socket (use it from one thread) and one IntervalMerger per stream."""

    def __init__(self, sock: zmq.Socket, card: ModelCard) -> None:
        self.sock, self.card = sock, card
        self.mergers: dict[str, IntervalMerger] = {}
        self._unconfirmed: Counter[str] = Counter()  # from streams already forgotten

    def results(self, items: list[Inferred]) -> list[Result]:
        """Build and send one Result per window; returns what was sent."""
        sent = []
        for item in items:
            sid = item.window.stream_id
            merger = self.mergers.get(sid)
            if merger is None:
                merger = self.mergers[sid] = IntervalMerger.for_card(self.card)
            try:
                result = build_result(self.card, item, merger, time.time())
            except WireError as exc:
                log.error("stream %s: model output does not fit a Result (%s); window dropped", sid, exc)
                continue
            self._send(sid, encode(result))
            sent.append(result)
        return sent

    def status(self, stream_id: str, level: str, reason: str, message: str) -> Status:
        msg = Status(stream_id, level, reason, message, time.time())
        self._send(stream_id, encode(msg))
        return msg

    def forget(self, stream_id: str) -> None:
        """Drop an evicted stream's interval memory (intervals still waiting for confirmation count as unconfirmed)."""
        merger = self.mergers.pop(stream_id, None)
        if merger is not None:
            merger.reset()
            self._unconfirmed.update(merger.take_unconfirmed())

    def take_unconfirmed(self) -> Counter[str]:
        """Intervals that never reached the card's interval_rule.confirm, by label, since the last call (all streams)."""
        out, self._unconfirmed = self._unconfirmed, Counter()
        for merger in self.mergers.values():
            out.update(merger.take_unconfirmed())
        return out

    def _send(self, topic: str, payload: bytes) -> None:
        try:
            # PUB drops at its high-water mark rather than blocking; NOBLOCK makes that explicit.
            self.sock.send_multipart([topic.encode("ascii"), payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
