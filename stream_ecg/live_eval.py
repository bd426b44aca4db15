"""`stream-ecg evaluate`: score the live path (replay -> serve -> published results) against the
reference beat annotations of any WFDB database.

The published Results of each record are turned back into an `offline.RecordOutput`, so the beat
and window scores come from `evaluation.score_records`, the code that scores the offline path.
On top of that this module measures what only the live path has: alarm latency, throughput, and
windows lost on the way (a lost window is always reported, never silently scored around).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from .buffer import StreamRefused, check_layout
from .card import ModelCard
from .data import DS1, DS2, Beats, Record, excerpt_dir, load_record, mitdb_dir
from .dsp import StreamResampler
from .evaluation import EC57_TOL_S, score_records
from .offline import RecordOutput
from .postprocess import LabelledInterval
from .record import AnnotationRecorder, record_name
from .replay import EXCERPT_RECORDS
from .scoring import GradeCounts, distribution, grade_window
from .subscribe import messages
from .wire import Chunk, Interval, Result, Status, encode

__all__ = [
    "EvalSettings",
    "EvaluateError",
    "LiveRecord",
    "LiveRun",
    "Collected",
    "alarm_latencies",
    "beat_sent_at",
    "collect_results",
    "drop_counts",
    "evaluate",
    "grade_record",
    "resolve_records",
    "run_live",
    "summarise",
    "write_wfdb",
]

log = logging.getLogger(__name__)

EC57_SKIP_S = 300.0  # EC57 scores from 5 min into each record
MARGIN_S = 0.2  # window metrics and grades ignore beats this close to a window edge (as trainer export does)
PROBE_FS = 10.0  # below any rate the worker resamples, so a probe is answered with a refusal Status
SETTLE_S = 5.0  # an external worker: this long without results after the last chunk means it is done
ABNORMAL = ("V", "S")  # the classes the JSON always carries, whatever the card calls abnormal


class EvaluateError(RuntimeError):
    """The evaluation could not run; the message says what to check."""


@dataclass(frozen=True)
class EvalSettings:
    """How records are streamed into the worker."""

    chunk_ms: float = 250.0
    speed: float = 0.0  # 0 = as fast as the worker keeps up; N = N x real time (sent_at follows replay's clock)
    max_outstanding: int = 64  # windows sent but not yet published: two full batches, far below the worker's queue (2048)
    stall_s: float = 30.0  # no result for this long while waiting: the missing windows are written off
    skip_s: float = EC57_SKIP_S
    progress: bool = False


@dataclass(frozen=True)
class Collected:
    """One record's published Results turned back into the offline path's output, plus live timing."""

    output: RecordOutput
    published_at: np.ndarray  # per interval: unix time its Result was published
    ready_s: np.ndarray  # per interval: stream time (s) of the end of the chunk that completed its window
    processing_s: np.ndarray  # per Result: published - received at the worker
    flags: dict[str, int]


@dataclass(frozen=True)
class LiveRecord:
    """Everything the scores and the report need about one streamed record."""

    collected: Collected
    stream_id: str
    fs_in: float
    leads_in: tuple[str, ...]
    leads_used: tuple[str, ...]  # the input lead in each of the model's lead slots, in slot order
    signal: np.ndarray  # the first slot's lead at the record's rate (mV), for the report's strips
    beat_sent_at: np.ndarray  # per annotated beat: send time of the chunk holding it
    seconds: float
    windows_expected: int
    windows_missing: int
    results: tuple[Result, ...] = ()  # as published, for the WFDB annotation files
    statuses: tuple[dict, ...] = ()

    @property
    def output(self) -> RecordOutput:
        return self.collected.output

    @property
    def lead(self) -> str:
        """The input lead that fed the model's first slot (the one `signal` holds)."""
        return self.leads_used[0]


@dataclass(frozen=True)
class LiveRun:
    records: list[LiveRecord]
    card: ModelCard
    wall_s: float
    stream_s: float
    worker_drops: dict[str, int]
    refused: list[dict]
    worker: dict
    settings: EvalSettings


# --- which records --------------------------------------------------------------------------


def resolve_records(spec: str, data: Path | None) -> tuple[list[str], Path]:
    """Record names and directory for --records (DS1 | DS2 | excerpt | all | a comma list) and --data."""
    key = spec.strip()
    if key.lower() == "excerpt":
        return list(EXCERPT_RECORDS), Path(data) if data is not None else excerpt_dir()
    directory = Path(data) if data is not None else mitdb_dir()
    if not directory.is_dir():
        raise EvaluateError(f"--data {directory} is not a directory of WFDB records")
    if key.upper() in ("DS1", "DS2"):
        return list(DS1 if key.upper() == "DS1" else DS2), directory
    if key.lower() == "all":
        names = sorted(p.stem for p in directory.glob("*.hea") if p.with_suffix(".atr").exists())
        if not names:
            raise EvaluateError(f"no record in {directory} has both a .hea header and .atr annotations")
        return names, directory
    names = [r.strip() for r in key.split(",") if r.strip()]
    if not names:
        raise EvaluateError("name at least one record, e.g. --records 100,208, or DS2, excerpt, all")
    return names, directory


# --- pure pieces: Results -> RecordOutput, latency, grade ------------------------------------


def collect_results(name: str, card: ModelCard, results: Sequence[Result], beats: Beats, fs_in: float) -> Collected:
    """The offline path's RecordOutput from one stream's Results (intervals as published, beats at the model rate)."""
    by_start: dict[int, Result] = {}
    for r in results:
        by_start.setdefault(r.window_start, r)
    ordered = [by_start[s] for s in sorted(by_start)]
    published = sorted(results, key=lambda r: (r.timing.get("published", 0.0), r.window_start))
    intervals, first_seen, published_at, ready_s = [], [], [], []
    for r in published:
        ready = r.timing.get("sent", r.timing.get("received", 0.0)) - r.timing.get("stream_t0", 0.0)
        for iv in r.intervals:
            intervals.append(LabelledInterval(iv.start, iv.end, iv.label, iv.score))
            first_seen.append(r.window_start)
            published_at.append(r.timing.get("published", math.nan))
            ready_s.append(ready)
    flags: dict[str, int] = {}
    for r in ordered:
        for f in r.flags:
            flags[f] = flags.get(f, 0) + 1
    n_classes = len(card.classes)
    output = RecordOutput(
        name=name,
        fs=card.fs,
        starts=np.array([r.window_start for r in ordered], dtype=np.int64),
        probs=np.array([r.probs for r in ordered], dtype=np.float32).reshape(-1, n_classes),
        located=np.array([[c in r.located for c in card.abnormal] for r in ordered], dtype=bool).reshape(-1, len(card.abnormal)),
        intervals=tuple(intervals),
        first_seen=np.asarray(first_seen, dtype=np.int64),
        beat_samples=np.round(beats.samples * (card.fs / fs_in)).astype(np.int64),
        beat_aami=beats.aami(),
        lead_fallback="lead_fallback" in flags,
    )
    processing = [r.timing["published"] - r.timing["received"] for r in ordered if {"published", "received"} <= r.timing.keys()]
    return Collected(output, np.asarray(published_at, float), np.asarray(ready_s, float), np.asarray(processing, float), flags)


def beat_sent_at(bounds: np.ndarray, sent_at: np.ndarray, beat_samples_in: np.ndarray) -> np.ndarray:
    """Send time of the chunk holding each beat; `bounds` are the chunk edges in input samples."""
    idx = np.searchsorted(bounds, np.asarray(beat_samples_in), side="right") - 1
    return sent_at[np.clip(idx, 0, len(sent_at) - 1)] if len(sent_at) else np.full(len(idx), math.nan)


def alarm_latencies(col: Collected, beat_sent: np.ndarray, cls: str, tol: int) -> tuple[np.ndarray, np.ndarray]:
    """Per found beat of `cls`: (wall s from its chunk's send to the first covering interval's
    publication, stream s from the beat to the end of the chunk that completed that interval's window).

    Covering = an interval of the class within `tol` samples, as in the beat scores. An interval
    published before the beat's chunk left (it ended up to 150 ms before the beat) counts as 0.
    """
    out = col.output
    mask = out.beat_aami == cls
    pos, sent = out.beat_samples[mask], np.asarray(beat_sent)[mask]
    ivs = [(k, iv) for k, iv in enumerate(out.intervals) if iv.label == cls]
    wall, stream = [], []
    for b, s in zip(pos.tolist(), sent.tolist()):
        hits = [k for k, iv in ivs if iv.start - tol <= b < iv.end + tol]
        if not hits:
            continue
        k = min(hits, key=lambda j: col.published_at[j])
        wall.append(max(0.0, col.published_at[k] - s))
        stream.append(max(0.0, col.ready_s[k] - b / out.fs))
    return np.asarray(wall, float), np.asarray(stream, float)


def grade_record(out: RecordOutput, card: ModelCard, tol: int, margin: int) -> GradeCounts:
    """Grade I/II/III over the windows whose core holds an abnormal beat: the published intervals
    overlapping the window (+-tol) against the abnormal and the normal R peaks in its core."""
    abnormal = [c for c in card.abnormal if c in ABNORMAL] or list(card.abnormal)
    order = np.argsort(out.beat_samples, kind="stable")
    pos, cls = out.beat_samples[order], out.beat_aami[order]
    ivs = sorted(((iv.start, iv.end, iv.score) for iv in out.intervals), key=lambda v: v[0])
    iv_start = np.array([v[0] for v in ivs], dtype=np.int64)
    iv_end_max = np.maximum.accumulate(np.array([v[1] for v in ivs], dtype=np.int64)) if ivs else iv_start
    total = GradeCounts()
    for s in out.starts.tolist():
        lo, hi = np.searchsorted(pos, s + margin), np.searchsorted(pos, s + card.window - margin)
        core_pos, core_cls = pos[lo:hi], cls[lo:hi]
        ab = core_pos[np.isin(core_cls, abnormal)]
        if len(ab) == 0:
            continue
        first = int(np.searchsorted(iv_end_max, s - tol, side="right"))
        last = int(np.searchsorted(iv_start, s + card.window + tol, side="left"))
        near = [v for v in ivs[first:last] if v[1] > s - tol]
        total = total + grade_window(near, ab, core_pos[core_cls == "N"], tol)
    return total


# --- streaming --------------------------------------------------------------------------------


@dataclass
class _Stream:
    """Sender and collector state of one record's stream."""

    record: Record
    stream_id: str
    bounds: np.ndarray  # chunk edges, input samples
    sent_at: np.ndarray  # per chunk
    holdback: int  # model-rate samples the worker's resampler holds back at the end
    expected: int  # windows the whole record yields
    results: list[Result] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    starts_seen: set[int] = field(default_factory=set)
    due: int = 0  # windows the chunks sent so far yield
    refused: bool = False

    def windows_for(self, n_in: int, card: ModelCard) -> int:
        n = int(n_in * card.fs / self.record.fs) - self.holdback
        return 0 if n < card.window else 1 + (n - card.window) // card.hop


def _holdback(fs_in: float, card: ModelCard, bounds: np.ndarray) -> int:
    """Model-rate samples still inside the worker's resampler after the last chunk (0 at the model rate)."""
    if fs_in == card.fs:
        return 0
    r = StreamResampler(fs_in, card.fs, 1, dtype=np.float64)
    out = sum(r.process(np.zeros((1, int(b - a)))).shape[1] for a, b in zip(bounds[:-1], bounds[1:]))
    return max(0, int(bounds[-1] * card.fs / fs_in) - out)


class _Board:
    """What the subscriber thread hands the sender: results per stream, under one condition."""

    def __init__(self, streams: dict[str, _Stream], probe_prefix: str) -> None:
        self.streams, self.probe_prefix = streams, probe_prefix
        self.cond = threading.Condition()
        self.received = 0  # distinct windows published for our streams
        self.due_total = 0  # windows the chunks sent so far yield
        self.last_result = time.time()
        self.probe_answered = threading.Event()
        self.probes = 0
        self.other_model: str | None = None

    def add(self, msg: Result | Status, card: ModelCard) -> None:
        if msg.stream_id.startswith(self.probe_prefix):
            self.probe_answered.set()
            return
        st = self.streams.get(msg.stream_id)
        if st is None:
            return
        with self.cond:
            if isinstance(msg, Status):
                st.statuses.append(msg)
                if msg.level == "refused":
                    st.refused = True
            else:
                if (msg.model_id, msg.model_version) != (card.name, card.version):
                    self.other_model = f"{msg.model_id} {msg.model_version}"
                st.results.append(msg)
                if msg.window_start not in st.starts_seen:
                    st.starts_seen.add(msg.window_start)
                    self.received += 1
                self.last_result = time.time()
            self.cond.notify_all()


def run_live(
    records: list[Record],
    card: ModelCard,
    ingest: str,
    publish: str,
    settings: EvalSettings = EvalSettings(),
    worker_drops: Callable[[], dict[str, int]] | None = None,
    worker_idle: Callable[[], bool] | None = None,
    worker: dict | None = None,
) -> LiveRun:
    """Stream every record into the worker at `ingest`, collect its Results from `publish`, score-ready.

    Sending pauses while more than `max_outstanding` windows are unpublished, so the worker's queue
    never overflows at max speed; `worker_drops` (an in-process worker's drop counters) and a
    stall timeout account for windows that will never come.
    """
    if settings.chunk_ms <= 0 or settings.speed < 0 or settings.max_outstanding < 1:
        raise EvaluateError("need chunk_ms > 0, speed >= 0 and max_outstanding >= 1")
    tag = f"ev{secrets.token_hex(3)}"
    streams: dict[str, _Stream] = {}
    refused: list[dict] = []
    for i, rec in enumerate(records):
        sid = f"{tag}-{i:03d}-{record_name(rec.name)}"[:128]
        try:
            check_layout(card, rec.leads, rec.fs)
        except StreamRefused as exc:
            refused.append({"record": rec.name, "reason": exc.reason, "message": exc.message})
            log.warning("record %s cannot be served: %s", rec.name, exc.message)
            continue
        n = rec.signal.shape[1]
        step = settings.chunk_ms / 1000.0 * rec.fs
        bounds = np.unique(np.minimum(np.round(np.arange(0, n / step + 1) * step), n).astype(np.int64))
        st = _Stream(rec, sid, bounds, np.full(len(bounds) - 1, math.nan), _holdback(rec.fs, card, bounds), 0)
        st.expected = st.windows_for(n, card)
        streams[sid] = st
    if not streams:
        raise EvaluateError(f"the model {card.name} can serve none of the records: {refused}")

    board = _Board(streams, f"{tag}-probe")
    stop = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        for msg in messages(publish, stop=stop, ready=ready):
            board.add(msg, card)

    listener = threading.Thread(target=listen, name="evaluate-subscriber", daemon=True)
    listener.start()
    quiet_probes = _quiet_probes(f"{tag}-probe")
    logging.getLogger("stream_ecg.worker").addFilter(quiet_probes)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.SNDTIMEO, 10_000)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(ingest)
    try:
        ready.wait(10)
        _handshake(sock, board, tag)
        t0, t_last = _send(sock, list(streams.values()), card, settings, board, worker_drops)
        _settle(list(streams.values()), board, settings, worker_idle, worker_drops, t_last)
    finally:
        stop.set()
        listener.join(5)
        sock.close()
        logging.getLogger("stream_ecg.worker").removeFilter(quiet_probes)
    if board.other_model is not None:
        raise EvaluateError(
            f"the worker at {publish} serves {board.other_model}, but --model is {card.name} {card.version}; "
            "pass the model folder the worker serves"
        )
    wall_s = max(board.last_result, t_last) - t0
    live = []
    for st in streams.values():
        if st.refused:
            msg = next((s for s in st.statuses if s.level == "refused"), None)
            refused.append({"record": st.record.name, "reason": msg.reason if msg else "refused", "message": msg.message if msg else ""})
            continue
        live.append(_live_record(st, card))
    drops = worker_drops() if worker_drops is not None else {}
    if drops.get("refused"):  # the handshake's probes are refused on purpose
        drops["refused"] -= board.probes
        if drops["refused"] <= 0:
            del drops["refused"]
    stream_s = sum(r.seconds for r in live)
    return LiveRun(live, card, wall_s, stream_s, drops, refused, worker or {"ingest": ingest, "publish": publish}, settings)


def _quiet_probes(prefix: str) -> Callable[[logging.LogRecord], bool]:
    """A log filter for an in-process worker: the refusals of our own probes are expected, not news."""
    def keep(record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(a, str) and a.startswith(prefix) for a in args)

    return keep


def _handshake(sock: zmq.Socket, board: _Board, tag: str) -> None:
    """Until the subscription reaches the PUB socket (ZeroMQ's slow joiner): a probe too slow to serve gets a Status."""
    for i in range(100):
        probe = Chunk(f"{tag}-probe-{i}", 0, 0, PROBE_FS, ("MLII",), np.zeros((1, 5), np.float32), time.time())
        try:
            sock.send(encode(probe))
            board.probes += 1
        except zmq.Again:
            raise EvaluateError("the worker's ingest socket takes no chunks; is `stream-ecg serve` running there?") from None
        if board.probe_answered.wait(0.1 if i < 50 else 0.5):
            return
    raise EvaluateError("no Status came back from the worker's publish socket; check --connect-publish")


def _send(
    sock: zmq.Socket,
    streams: list[_Stream],
    card: ModelCard,
    settings: EvalSettings,
    board: _Board,
    worker_drops: Callable[[], dict[str, int]] | None,
) -> tuple[float, float]:
    """Round-robin the streams chunk by chunk (stream-time order, like replay), pausing for credit."""
    from tqdm import tqdm

    total = sum(len(st.sent_at) for st in streams)
    bar = tqdm(total=total, unit="chunk", desc="evaluate", disable=not settings.progress, leave=False, mininterval=0.5)
    written_off = 0
    t0 = time.time()
    try:
        for k in range(max(len(st.sent_at) for st in streams)):
            for st in streams:
                if k >= len(st.sent_at) or st.refused:
                    continue
                written_off = _wait_for_credit(streams, settings, board, worker_drops, written_off)
                a, b = int(st.bounds[k]), int(st.bounds[k + 1])
                if settings.speed > 0:
                    due = t0 + b / st.record.fs / settings.speed
                    time.sleep(max(0.0, due - time.time()))
                else:
                    due = time.time()
                chunk = Chunk(st.stream_id, k, a, st.record.fs, st.record.leads, st.record.signal[:, a:b], due)
                try:
                    sock.send(encode(chunk))
                except zmq.Again:
                    raise EvaluateError("the worker stopped taking chunks for 10 s; is it still running?") from None
                st.sent_at[k] = due
                with board.cond:
                    due_now = st.windows_for(b, card) if k + 1 < len(st.sent_at) else st.expected
                    board.due_total += due_now - st.due
                    st.due = due_now
                bar.update(1)
    finally:
        bar.close()
    return t0, time.time()


def _outstanding(streams: list[_Stream]) -> int:
    return sum(max(0, st.due - len(st.starts_seen)) for st in streams if not st.refused)


def _wait_for_credit(streams, settings: EvalSettings, board: _Board, worker_drops, written_off: int) -> int:
    """Block while too many windows are unpublished; returns the windows written off as never coming."""
    with board.cond:
        while True:
            if board.due_total - board.received - written_off <= settings.max_outstanding:
                return written_off
            # Over the cap by the cheap count: the exact one leaves out refused streams and dropped windows.
            waiting = _outstanding(streams) - _lost(worker_drops) - written_off
            if waiting <= settings.max_outstanding:
                return written_off
            if time.time() - board.last_result > settings.stall_s:
                log.warning("no result for %.0f s with %d windows outstanding: writing them off", settings.stall_s, waiting)
                written_off += waiting
                board.last_result = time.time()
                continue
            board.cond.wait(0.5)


def _lost(worker_drops: Callable[[], dict[str, int]] | None) -> int:
    if worker_drops is None:
        return 0
    d = worker_drops()
    return d.get("queue_full", 0) + d.get("infer_error", 0)


def _settle(streams: list[_Stream], board: _Board, settings: EvalSettings, worker_idle, worker_drops, t_last: float) -> None:
    """Wait for every expected window, or until the worker is idle (or quiet) with some never coming."""
    while True:
        with board.cond:
            done = all(st.refused or len(st.starts_seen) >= st.expected for st in streams)
            quiet = time.time() - max(board.last_result, t_last)
            if done:
                return
            if worker_idle is not None and worker_idle() and quiet > 1.0:
                return
            if quiet > (settings.stall_s if worker_idle is not None else SETTLE_S):
                return
            board.cond.wait(0.2)


def _live_record(st: _Stream, card: ModelCard) -> LiveRecord:
    rec = st.record
    col = collect_results(rec.name, card, st.results, rec.beats, rec.fs)
    idx, _ = card.leads.pick(rec.leads)
    got = {int(s) for s in col.output.starts.tolist()}
    return LiveRecord(
        collected=col,
        stream_id=st.stream_id,
        fs_in=rec.fs,
        leads_in=rec.leads,
        leads_used=tuple(rec.leads[i] for i in idx),
        signal=rec.signal[idx[0]],
        beat_sent_at=beat_sent_at(st.bounds, st.sent_at, rec.beats.samples),
        seconds=rec.signal.shape[1] / rec.fs,
        windows_expected=st.expected,
        windows_missing=sum(1 for s in range(0, st.expected * card.hop, card.hop) if s not in got),
        results=tuple(st.results),
        statuses=tuple({"level": s.level, "reason": s.reason, "message": s.message} for s in st.statuses),
    )


def drop_counts(worker) -> dict[str, int]:
    """A worker's drop counters by reason (queue_full, refused, ...), read from its metrics registry."""
    out = {}
    for metric in worker.metrics.drops.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                out[sample.labels["reason"]] = int(sample.value)
    return out


def evaluate(
    names: list[str],
    data_dir: Path,
    model_dir: Path,
    settings: EvalSettings = EvalSettings(),
    connect: tuple[str, str] | None = None,
    backend: str = "onnxruntime",
    threads: int = 1,
) -> LiveRun:
    """Load the records, start a worker on loopback (or use the one at `connect` = (ingest, publish)), run."""
    from .card import load_card

    records = [load_record(n, data_dir) for n in names]
    if connect is not None:
        card = load_card(model_dir, verify_files=False)
        return run_live(records, card, connect[0], connect[1], settings,
                        worker={"in_process": False, "ingest": connect[0], "publish": connect[1]})
    from .worker import Worker

    w = Worker(model_dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", metrics_port=None, backend=backend, threads=threads)
    thread = w.start()
    info = {"in_process": True, "backend": w.model.backend, "threads": threads,
            "ingest": w.ingest_endpoint, "publish": w.publish_endpoint}
    try:
        return run_live(records, w.card, w.ingest_endpoint, w.publish_endpoint, settings,
                        lambda: drop_counts(w), w.batcher.idle, info)
    finally:
        w.stop()
        thread.join(60)


# --- the summary ------------------------------------------------------------------------------


def _point_match(ref: np.ndarray, test: np.ndarray, tol: int) -> dict:
    """bxb-style one-to-one matching of interval centres to R peaks (wfdb.processing's Comparitor)."""
    from wfdb.processing import compare_annotations

    ref, test = np.sort(np.asarray(ref, np.int64)), np.sort(np.asarray(test, np.int64))
    if len(ref) == 0 or len(test) == 0:
        tp = 0
    else:
        comp = compare_annotations(ref, test, tol + 1)  # Comparitor matches |ref - test| < window
        tp = int(comp.tp)
    return {"se": tp / len(ref) if len(ref) else None, "ppv": tp / len(test) if len(test) else None,
            "beats": int(len(ref)), "annotations": int(len(test)), "matched": tp}


def summarise(run: LiveRun, command: str = "") -> dict:
    """The JSON document: beat (whole record and from 5 min), window, grade, latency, throughput, per record."""
    card = run.card
    tol = int(round(EC57_TOL_S * card.fs))
    margin = int(round(MARGIN_S * card.fs))
    outputs = [r.output for r in run.records]
    with warnings.catch_warnings():  # a class without beats averages to NaN, reported as null
        warnings.simplefilter("ignore", RuntimeWarning)
        whole = score_records(outputs, card, margin)
        from_5 = score_records(outputs, card, margin, skip_s=run.settings.skip_s)
    for c, m in whole["window"].items():
        tn = m["n"] - m["tp"] - m["fp"] - m["fn"]
        m["tn"] = tn
        m["confusion"] = {"rows": "truth (no, yes)", "columns": "predicted (no, yes)", "matrix": [[tn, m["fp"]], [m["fn"], m["tp"]]]}
    grades = [grade_record(out, card, tol, margin) for out in outputs]
    total = sum(grades, GradeCounts())
    lat_wall: dict[str, list[np.ndarray]] = {c: [] for c in ABNORMAL}
    lat_stream: dict[str, list[np.ndarray]] = {c: [] for c in ABNORMAL}
    rows = []
    for rec, row, five, g in zip(run.records, whole["records"], from_5["records"], grades):
        per = {}
        for c in ABNORMAL:
            wall, stream = alarm_latencies(rec.collected, rec.beat_sent_at, c, tol)
            lat_wall[c].append(wall)
            lat_stream[c].append(stream)
            per[c] = distribution(wall)
        rows.append({
            "record": rec.output.name, "stream_id": rec.stream_id, "fs": rec.fs_in, "leads": list(rec.leads_in),
            "lead_used": ",".join(rec.leads_used), "lead_fallback": rec.output.lead_fallback, "seconds": rec.seconds,
            "windows": int(len(rec.output.starts)), "windows_expected": rec.windows_expected,
            "windows_missing": rec.windows_missing, "flags": rec.collected.flags, "statuses": list(rec.statuses),
            "beats_by_class": dict(zip(*(x.tolist() for x in np.unique(rec.output.beat_aami, return_counts=True)))),
            "beat": {c: row.get(c, _no_class()) for c in ABNORMAL},
            "beat_from_5_min": {c: five.get(c, _no_class()) for c in ABNORMAL},
            "grade": g.summary(), "alarm_latency_s": per,
        })
    every_wall = {c: np.concatenate(v) if v else np.zeros(0) for c, v in lat_wall.items()}
    every_stream = {c: np.concatenate(v) if v else np.zeros(0) for c, v in lat_stream.items()}
    processing = np.concatenate([r.collected.processing_s for r in run.records]) if run.records else np.zeros(0)
    missing = sum(r.windows_missing for r in run.records)
    summary = {
        "beat": {c: whole["beat"].get(c, _no_class()) for c in ABNORMAL},
        "beat_record_average": whole["beat_record_average"],
        "window": whole["window"],
        "window_located": whole["window_located"],
        "grade": {**total.summary()["grade"], **{k: v for k, v in total.summary().items() if k != "grade"}},
        "alarm_latency_s": {**distribution(np.concatenate(list(every_wall.values()))), "by_class": {c: distribution(v) for c, v in every_wall.items()}},
        "alarm_stream_delay_s": {**distribution(np.concatenate(list(every_stream.values()))), "by_class": {c: distribution(v) for c, v in every_stream.items()}},
        "processing_latency_s": distribution(processing),
        "realtime_factor": run.stream_s / run.wall_s if run.wall_s > 0 else None,
        "stream_seconds": run.stream_s,
        "wall_seconds": run.wall_s,
        "records": rows,
        "from_5_min": {"beat": {c: from_5["beat"].get(c, _no_class()) for c in ABNORMAL},
                       "beat_record_average": from_5["beat_record_average"], "skip_s": run.settings.skip_s},
        "wfdb_compare": _wfdb_compare(run, tol),
        "drops": {"windows_missing": missing, "windows_expected": sum(r.windows_expected for r in run.records),
                  "worker": run.worker_drops, "refused": run.refused},
        "model": {"name": card.name, "version": card.version},
        "worker": run.worker,
        "settings": {"chunk_ms": run.settings.chunk_ms, "speed": run.settings.speed,
                     "max_outstanding": run.settings.max_outstanding, "tolerance_s": EC57_TOL_S,
                     "margin_samples": margin, "skip_s": run.settings.skip_s},
        "command": command,
    }
    return _clean(summary)


def _no_class() -> dict:
    return {"se": None, "ppv": None, "beats": 0, "intervals": 0}


def _wfdb_compare(run: LiveRun, tol: int) -> dict:
    """Per class, gross over records: what `bxb` would see from the --also-write-wfdb annotations."""
    out = {}
    for c in ABNORMAL:
        parts = [_point_match(r.output.beat_samples[r.output.beat_aami == c],
                              [(iv.start + iv.end - 1) // 2 for iv in r.output.intervals if iv.label == c], tol)
                 for r in run.records]
        tp, ref, test = (sum(p[k] for p in parts) for k in ("matched", "beats", "annotations"))
        out[c] = {"se": tp / ref if ref else None, "ppv": tp / test if test else None, "beats": ref, "annotations": test}
    out["method"] = "interval centres vs R peaks, one-to-one within 150 ms (wfdb.processing.compare_annotations)"
    return out


def _clean(x):
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


# --- WFDB annotations -------------------------------------------------------------------------


def write_wfdb(run: LiveRun, out_dir: Path | str, extension: str = "sea") -> dict[str, Path]:
    """The published intervals per record as `<record>.<extension>` at the record's own rate, for `bxb -r REC -a atr sea`."""
    recorder = AnnotationRecorder()
    for rec in run.records:
        k = rec.fs_in / run.card.fs
        for r in rec.results:
            recorder.add(_at_rate(r, record_name(rec.output.name), rec.fs_in, k))
    return recorder.write(out_dir, extension)


def _at_rate(r: Result, stream_id: str, fs: float, k: float) -> Result:
    """A Result re-expressed at another sampling rate (k = new / old samples), under another stream id."""
    def at(x: int) -> int:
        return int(round(x * k))

    ivs = tuple(Interval(at(iv.start), max(at(iv.end), at(iv.start) + 1), iv.label, iv.score) for iv in r.intervals)
    return Result(stream_id, at(r.window_start), max(at(r.window_end), at(r.window_start) + 1), fs, r.t_start, r.t_end,
                  r.model_id, r.model_version, r.classes, r.probs, ivs, r.flags, r.timing, r.alarms, r.located)
