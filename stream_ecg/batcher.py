"""Micro-batching across streams: ready windows queue up, one thread runs the model on batches.

Ingest only appends to a bounded queue, so it never waits for the model; when the model falls
behind, the oldest windows are dropped (a late result for a bedside monitor is worth less than
a current one) and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .buffer import ReadyWindow
from .fusion import infer_windows_raw
from .infer import InferenceModel
from .postprocess import LabelledInterval, label_windows

__all__ = ["Inferred", "MicroBatcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inferred:
    """A window after the model: class probabilities and window-relative labelled intervals."""

    window: ReadyWindow
    probs: np.ndarray  # (classes,)
    intervals: list[LabelledInterval]
    enqueued: float  # unix time it entered the queue
    picked: float  # unix time the inference thread took it
    inferred: float  # unix time its batch finished (model call + interval labelling)
    batch_size: int
    infer_s: float  # the batch's model call, seconds
    label_s: float  # the batch's interval labelling, seconds


@dataclass(slots=True)
class _Job:
    window: ReadyWindow
    enqueued: float
    due: float  # monotonic deadline: its batch must start by then


def _per_window(values: list[float | None]) -> np.ndarray | None:
    """A per-window stream measure the buffer stamped on each window, as label_intervals takes it: None when the
    card's rule reads none (the buffer left it None)."""
    return None if any(v is None for v in values) else np.array(values, dtype=np.float64)


class MicroBatcher:
    """Bounded window queue plus one inference thread; results go to `on_done` from that thread."""

    def __init__(
        self,
        model: InferenceModel,
        on_done: Callable[[list[Inferred]], None],
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 2048,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < max_batch or max_wait_ms < 0:
            raise ValueError(
                f"need max_batch >= 1, max_queue >= max_batch and max_wait_ms >= 0; got "
                f"{max_batch}, {max_queue}, {max_wait_ms}"
            )
        self.model, self.on_done, self.on_drop = model, on_done, on_drop
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self._q: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="stream-ecg-infer", daemon=True)

    @property
    def depth(self) -> int:
        return len(self._q)

    def start(self) -> None:
        self._thread.start()

    def submit(self, window: ReadyWindow) -> int:
        """Queue one window; returns how many old windows were dropped to make room."""
        job = _Job(window, time.time(), time.monotonic() + self.max_wait)
        dropped = 0
        with self._cond:
            while len(self._q) >= self.max_queue:
                self._q.popleft()
                dropped += 1
            self._q.append(job)
            if len(self._q) == 1 or len(self._q) >= self.max_batch:
                self._cond.notify()
        return dropped

    def idle(self) -> bool:
        """Nothing queued and no batch in flight."""
        with self._cond:
            return not self._q and not self._busy

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued windows for up to `timeout` s, then end the thread. Windows still queued then (a backlog
        the model cannot clear in time) are dropped, counted as "shutdown" and logged, and the thread ends after its
        batch in flight: a thread left running inference past the process's exit aborts it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if not self._thread.is_alive():
            return
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return
        with self._cond:
            left = len(self._q)
            self._q.clear()
        if left:
            log.warning("stopping: %d queued windows not inferred within %.0f s; dropped", left, timeout)
            if self.on_drop is not None:
                self.on_drop("shutdown", left)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("stopping: the inference thread is still in a model call after %.0f s more", timeout)

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._q:
                if self._stopping:
                    return None
                self._cond.wait(0.5)
            while len(self._q) < self.max_batch and not self._stopping:
                left = self._q[0].due - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(len(self._q), self.max_batch)
            self._busy = True
            return [self._q.popleft() for _ in range(n)]

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            try:
                done = self._infer(jobs)
            except Exception:  # a model failure must not kill the thread that serves every bed
                log.exception("inference failed on a batch of %d windows; dropping it", len(jobs))
                if self.on_drop is not None:
                    self.on_drop("infer_error", len(jobs))
                done = []
            try:
                if done:
                    self.on_done(done)
            except Exception:
                log.exception("result hand-off failed")
            finally:
                with self._cond:
                    self._busy = False

    def _infer(self, jobs: list[_Job]) -> list[Inferred]:
        picked = time.time()
        x = np.stack([j.window.x for j in jobs])
        irregular, rr_reference = (_per_window([getattr(j.window, k) for j in jobs]) for k in ("irregularity", "rr_reference"))
        peaks = None if any(j.window.peaks is None for j in jobs) else [j.window.peaks for j in jobs]  # found at ingest
        t0 = time.perf_counter()
        raw, probs, attention = infer_windows_raw(self.model, x, rr_reference, peaks)
        t1 = time.perf_counter()
        intervals = label_windows(self.model.card, self.model, x, raw, probs, attention, irregular, rr_reference, peaks)
        t2 = time.perf_counter()
        inferred = time.time()
        return [
            Inferred(j.window, probs[i], intervals[i], j.enqueued, picked, inferred, len(jobs), t1 - t0, t2 - t1)
            for i, j in enumerate(jobs)
        ]
