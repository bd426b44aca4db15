"""Per-stream state between the wire and the model: sequence tracking, DSP, a bounded ring, windows.

No sockets and no clock of its own (callers pass `now`), so the worker, the bench and the tests
drive it the same way. Sample indices are absolute model-rate samples on the stream's clock:
0 is the first sample of the stream's first chunk; after a gap they continue from the chunk's
`start`, so a gap leaves a hole in the indices instead of shifting everything after it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .card import CardError, ModelCard
from .dsp import StreamPreprocessor, window_input_with_peaks
from .postprocess import new_recent, new_reference, stream_irregularity, stream_rr_reference
from .wire import Chunk

__all__ = [
    "MAX_CHUNK_S",
    "MAX_INPUT_FS",
    "MIN_INPUT_FS",
    "PushOutcome",
    "ReadyWindow",
    "StreamRefused",
    "StreamState",
    "StreamTable",
]

MIN_INPUT_FS, MAX_INPUT_FS = 50.0, 2000.0
MAX_CHUNK_S = 60.0  # one chunk may not hold more; a bigger one would stall ingest on its DSP
RECENT_SEQS = 256  # sequence numbers remembered to tell a duplicate from a late chunk

# Events a chunk can raise; each is flagged on the stream's next published window.
GAP, DUPLICATE, OUT_OF_ORDER, RESYNC = "gap", "duplicate", "out_of_order", "resync"
LEAD_FALLBACK = "lead_fallback"


class StreamRefused(Exception):
    """The model's card cannot honour this stream; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ReadyWindow:
    """One normalised model input cut from a stream, with what publishing needs to stamp it."""

    stream_id: str
    start: int  # absolute model-rate sample of x[:, 0]
    x: np.ndarray  # (model leads, window) float32, normalised
    flags: tuple[str, ...]
    received: float  # unix time the chunk completing this window reached the worker
    sent_at: float  # the gateway's stamp on that chunk (0.0 when it sent none)
    chunk_end: int  # absolute model-rate sample just past that chunk, to map samples to wall time
    irregularity: float | None = None  # the stream's recent rhythm irregularity, when the card's rule reads it
    rr_reference: float | None = None  # the stream's recent reference RR (samples, NaN: too few), when the rule reads it
    peaks: np.ndarray | None = None  # R peaks of x's first lead, found once at ingest (None: the card derives no channel)


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What one chunk did: windows it completed, events it raised, why it was dropped if it was."""

    windows: list[ReadyWindow] = field(default_factory=list)
    events: tuple[str, ...] = ()
    dropped: str | None = None
    refusal: StreamRefused | None = None  # set once, when a stream is (newly) refused


def check_layout(card: ModelCard, leads: tuple[str, ...], fs: float) -> tuple[list[int], bool]:
    """Which of the stream's leads feed the model, and whether the card's lead fallback was used."""
    if not MIN_INPUT_FS <= fs <= MAX_INPUT_FS:
        raise StreamRefused(
            "sample_rate",
            f"fs={fs:g} Hz is outside {MIN_INPUT_FS:g}..{MAX_INPUT_FS:g} Hz, the rates this worker "
            f"resamples to the model's {card.fs:g} Hz; send the monitor's native ECG rate",
        )
    try:
        return card.leads.pick(leads)
    except CardError as exc:
        raise StreamRefused(
            "leads",
            f"model {card.name} {card.version} needs leads {list(card.leads.leads)}: {exc}; "
            "send one of those leads (or an alias the card lists)",
        ) from None


class StreamState:
    """One bed: sequence tracking, the stateful preprocessor and a ring of window + hop samples."""

    def __init__(self, card: ModelCard, chunk: Chunk, now: float) -> None:
        self.card = card
        self.stream_id = chunk.stream_id
        self.window, self.hop = card.window, card.hop
        self.n_leads = len(card.leads.leads)
        self.ring = np.zeros((self.n_leads, self.window + self.hop), np.float32)
        self.last_seen = now
        self._recent: deque[int] = deque(maxlen=RECENT_SEQS)
        self._recent_set: set[int] = set()
        self._pending: set[str] = set()
        self._layout(chunk)
        self._rebase(chunk.start, 0)

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring and the bookkeeping (the preprocessor's filter state is tiny)."""
        history = self.rr_history.rr.maxlen * 32 if self.rr_history is not None else 0  # boxed ints in a deque
        recent = sum(m.capacity * 128 for m in (self.recent, self.reference) if m is not None)  # two boxed ints each
        return int(self.ring.nbytes) + 64 * RECENT_SEQS + 4096 + history + recent

    def _layout(self, chunk: Chunk) -> None:
        self.idx, fallback = check_layout(self.card, chunk.leads, chunk.fs)
        self.leads_in, self.fs_in = chunk.leads, chunk.fs
        self.sticky = (LEAD_FALLBACK,) if fallback else ()
        self.pre = StreamPreprocessor(self.card.dsp, chunk.fs, self.n_leads)
        # a new layout may be another monitor or patient: its rhythm starts afresh (a gap keeps it)
        self.rr_history = self.card.dsp.new_history()
        self.recent, self.reference = new_recent(self.card), new_reference(self.card)

    def _abs(self, start: int) -> int:
        return self._origin_abs + int(round((start - self._origin_start) * self.card.fs / self.fs_in))

    def _rebase(self, start: int, abs_start: int) -> None:
        """Put input sample `start` at absolute `abs_start` and start a fresh segment there."""
        self._origin_start, self._origin_abs = start, abs_start
        self._segment(start)

    def _resync(self, start: int, abs_start: int) -> None:
        self._recent.clear()
        self._recent_set.clear()
        self._rebase(start, abs_start)

    def _segment(self, start: int) -> None:
        """Forget all signal: the next window starts at this chunk, never glued to the old one."""
        self.pre.reset()
        self._ring_abs0 = self._next_win = self._abs(start)
        self._filled = 0
        self.next_start = start

    def push(self, chunk: Chunk, now: float) -> PushOutcome:
        """Feed one chunk; may raise StreamRefused when the stream changes to a layout it cannot honour."""
        self.last_seen = now
        n = chunk.samples.shape[1]
        if n > MAX_CHUNK_S * chunk.fs:
            return PushOutcome(dropped="chunk_too_long")
        events: tuple[str, ...] = ()
        expected_abs = self._abs(self.next_start)
        if (chunk.leads, chunk.fs) != (self.leads_in, self.fs_in):
            self._layout(chunk)
            self._resync(chunk.start, expected_abs)
            events = (RESYNC,)
        elif self._recent and chunk.seq <= self._recent[-1]:
            if chunk.seq >= self._recent[-1] - RECENT_SEQS:
                event = DUPLICATE if chunk.seq in self._recent_set else OUT_OF_ORDER
                self._pending.add(event)
                return PushOutcome(events=(event,), dropped=event)
            # Far behind anything recent: the gateway restarted its counter.
            self._resync(chunk.start, expected_abs)
            events = (RESYNC,)
        elif self._recent and chunk.start < self.next_start:
            # The sample clock went back (a gateway restart): keep indices monotonic.
            self._resync(chunk.start, expected_abs)
            events = (RESYNC,)
        elif self._recent and (chunk.seq != self._recent[-1] + 1 or chunk.start != self.next_start):
            self._segment(chunk.start)
            events = (GAP,)
        self._pending.update(events)
        self._remember(chunk.seq)
        self.next_start = chunk.start + n
        y = self.pre.process(chunk.samples[self.idx])
        return PushOutcome(windows=self._append(y, chunk, now), events=events)

    def _remember(self, seq: int) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(seq)
        self._recent_set.add(seq)

    def _append(self, y: np.ndarray, chunk: Chunk, now: float) -> list[ReadyWindow]:
        out: list[ReadyWindow] = []
        cap, pos, m = self.ring.shape[1], 0, y.shape[1]
        chunk_end = self._abs(chunk.start + chunk.samples.shape[1])
        while pos < m:
            if self._filled == cap:
                # Full means the next window starts more than `hop` in: drop what precedes it.
                keep = self._next_win - self._ring_abs0
                self.ring[:, : cap - keep] = self.ring[:, keep:cap]
                self._filled -= keep
                self._ring_abs0 = self._next_win
            k = min(m - pos, cap - self._filled)
            self.ring[:, self._filled : self._filled + k] = y[:, pos : pos + k]
            self._filled += k
            pos += k
            while self._ring_abs0 + self._filled >= self._next_win + self.window:
                off = self._next_win - self._ring_abs0
                x, peaks = window_input_with_peaks(self.ring[:, off : off + self.window], self.card.dsp, self._next_win,
                                                   self.rr_history)
                irr = stream_irregularity(self.card, x[None], np.array([self._next_win]), self.recent, peaks)
                ref = stream_rr_reference(self.card, x[None], np.array([self._next_win]), self.reference, peaks)
                flags = tuple(sorted(self._pending)) + self.sticky
                self._pending.clear()
                out.append(ReadyWindow(self.stream_id, self._next_win, x, flags, now, chunk.sent_at, chunk_end,
                                       None if irr is None else float(irr[0]), None if ref is None else float(ref[0]),
                                       None if peaks is None else peaks[0]))
                self._next_win += self.hop
        return out


@dataclass
class _Refused:
    leads: tuple[str, ...]
    fs: float
    last_seen: float


class StreamTable:
    """All streams of one worker: created on first chunk, refused once with a reason, evicted when idle."""

    def __init__(self, card: ModelCard, idle_s: float = 60.0, max_streams: int = 10_000) -> None:
        self.card, self.idle_s, self.max_streams = card, idle_s, max_streams
        self.streams: dict[str, StreamState] = {}
        self.refused: dict[str, _Refused] = {}

    def __len__(self) -> int:
        return len(self.streams)

    def push(self, chunk: Chunk, now: float) -> PushOutcome:
        sid = chunk.stream_id
        state = self.streams.get(sid)
        try:
            if state is None:
                gone = self.refused.get(sid)
                if gone is not None and (gone.leads, gone.fs) == (chunk.leads, chunk.fs):
                    gone.last_seen = now
                    return PushOutcome(dropped="refused")
                if len(self.streams) >= self.max_streams:
                    raise StreamRefused(
                        "too_many_streams",
                        f"this worker already serves {self.max_streams} streams; run another worker",
                    )
                state = self.streams[sid] = StreamState(self.card, chunk, now)
                self.refused.pop(sid, None)
            return state.push(chunk, now)
        except StreamRefused as exc:
            self.streams.pop(sid, None)
            self.refused[sid] = _Refused(chunk.leads, chunk.fs, now)
            return PushOutcome(dropped="refused", refusal=exc)

    def forget(self, stream_id: str) -> None:
        """Drop a stream's state; its next chunk starts it afresh."""
        self.streams.pop(stream_id, None)
        self.refused.pop(stream_id, None)

    def evict_idle(self, now: float) -> list[str]:
        """Forget streams (and refusals) silent for idle_s; returns the evicted stream ids."""
        cutoff = now - self.idle_s
        gone = [sid for sid, s in self.streams.items() if s.last_seen < cutoff]
        for sid in gone:
            del self.streams[sid]
        for sid in [sid for sid, r in self.refused.items() if r.last_seen < cutoff]:
            del self.refused[sid]
        return gone
