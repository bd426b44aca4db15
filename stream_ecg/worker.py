"""The live worker: PULL chunks -> per-stream windows -> micro-batched inference -> PUB results.

One thread runs the socket loop (decode, DSP, windows, publishing); one runs the model. The loop
polls with a timeout, so it never blocks forever, and bad input is counted and logged once per
peer and reason, never raised through the loop. SIGINT/SIGTERM finish the queued windows, publish
them and close the sockets with a bounded linger.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from pathlib import Path

import zmq

from .batcher import Inferred, MicroBatcher
from .buffer import StreamTable
from .infer import InferenceModel, load_model
from .metrics import Metrics, MetricsServer
from .postprocess import check_labels
from .publish import Publisher
from .wire import WireError, decode_chunk

__all__ = ["Worker", "decode_error_reason", "connect_address"]

log = logging.getLogger(__name__)

POLL_MS = 100  # the loop wakes at least this often to notice stop() and do housekeeping
READ_BURST = 128  # messages read per wake-up before results get their turn (~10 ms of DSP)
HOUSEKEEPING_S = 1.0
LOGGED_KEYS_MAX = 4096


def decode_error_reason(exc: WireError) -> str:
    """A short, bounded-cardinality metric label for a decode failure."""
    text = str(exc)
    if text.startswith("not msgpack") or text.startswith("top level"):
        return "not_msgpack"
    if "wire version" in text and "unknown" in text:
        return "wire_version"
    if "'v' (wire version)" in text:
        return "not_stream_ecg"
    if "message kind" in text or text.startswith("expected a chunk"):
        return "wrong_kind"
    return "invalid_field"


def connect_address(endpoint: str) -> str:
    """An address a client on this host can connect to, from a bound endpoint (0.0.0.0/* -> 127.0.0.1)."""
    return endpoint.replace("://0.0.0.0:", "://127.0.0.1:").replace("://*:", "://127.0.0.1:")


class Worker:
    """`stream-ecg serve` as an object: construct (binds, loads the model), then run() until stop()."""

    def __init__(
        self,
        model_dir: Path | str,
        ingest: str = "tcp://*:5555",
        publish: str = "tcp://*:5556",
        metrics_port: int | None = 9108,
        backend: str = "onnxruntime",
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        hwm: int = 10_000,
        idle_s: float = 60.0,
        *,
        threads: int = 1,
        max_queue: int = 2048,
        linger_ms: int = 1000,
        max_streams: int = 10_000,
        metrics_addr: str = "0.0.0.0",
        model: InferenceModel | None = None,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.model = model if model is not None else load_model(model_dir, backend, threads)
        check_labels(self.model)  # a model the labelling cannot serve fails here, not batch by batch
        self.card = self.model.card
        self.linger_ms = linger_ms
        self.stop_timeout_s = stop_timeout_s  # on stop, how long queued windows may still be inferred (MicroBatcher.stop)
        self.metrics = Metrics()
        self.metrics.model_info.labels(self.card.name, self.card.version, self.model.backend).set(1)
        self.table = StreamTable(self.card, idle_s=idle_s, max_streams=max_streams)
        self._done: deque[list[Inferred]] = deque()
        self._stop = threading.Event()
        self._logged: set[tuple[str, str]] = set()
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pub = self.ctx.socket(zmq.PUB)
        self._wake_rx = self.ctx.socket(zmq.PAIR)
        self._wake_tx = self.ctx.socket(zmq.PAIR)
        self.metrics_server: MetricsServer | None = None
        try:
            self.pull.setsockopt(zmq.RCVHWM, hwm)
            self.pull.setsockopt(zmq.LINGER, 0)
            self.pub.setsockopt(zmq.SNDHWM, hwm)
            self.pub.setsockopt(zmq.LINGER, linger_ms)
            self.pull.bind(ingest)
            self.pub.bind(publish)
            wake = f"inproc://stream-ecg-wake-{id(self)}"
            self._wake_rx.bind(wake)
            self._wake_tx.connect(wake)
            if metrics_port is not None:
                self.metrics_server = self.metrics.serve(metrics_port, metrics_addr)
        except Exception:
            self._close_sockets()
            raise
        self.publisher = Publisher(self.pub, self.card)
        self.batcher = MicroBatcher(
            self.model, self._hand_back, max_batch, max_wait_ms, max_queue, on_drop=self._count_drop
        )

    @property
    def ingest_endpoint(self) -> str:
        return self.pull.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def publish_endpoint(self) -> str:
        return self.pub.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_server is None else self.metrics_server.port

    def stop(self) -> None:
        """Ask run() to finish; safe from any thread and from a signal handler."""
        self._stop.set()

    def run(self) -> None:
        """Serve until stop() (or SIGINT/SIGTERM when run on the main thread), then shut down cleanly."""
        restore = self._install_signals()
        self.batcher.start()
        log.info(
            "serving %s %s on %s: ingest %s, publish %s, metrics :%s",
            self.card.name, self.card.version, self.model.backend,
            self.ingest_endpoint, self.publish_endpoint, self.metrics_port,
        )
        try:
            self._loop()
        finally:
            self._shutdown()
            for sig, handler in restore.items():
                signal.signal(sig, handler)

    def start(self) -> threading.Thread:
        """run() on a background thread (tests, the bench, the demo); stop() then join it."""
        thread = threading.Thread(target=self.run, name="stream-ecg-worker", daemon=True)
        thread.start()
        return thread

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: self.stop())
        return previous

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        while not self._stop.is_set():
            events = dict(poller.poll(POLL_MS))
            if self.pull in events:
                self._read_burst()
            if self._wake_rx in events:
                self._drain_wake()
            self._publish_done()
            if time.monotonic() >= next_housekeeping:
                self._housekeeping(time.time())
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S

    def _read_burst(self) -> None:
        for _ in range(READ_BURST):
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._ingest(frames)

    def _ingest(self, frames: list[zmq.Frame]) -> None:
        now = time.time()
        m = self.metrics
        try:
            if len(frames) != 1:
                raise WireError(f"expected one frame per chunk, got {len(frames)}; send the encoded chunk alone")
            chunk = decode_chunk(frames[0].bytes)
        except WireError as exc:
            reason = "framing" if len(frames) != 1 else decode_error_reason(exc)
            m.decode_errors.labels(reason).inc()
            self._log_once(_peer(frames[0]), reason, f"undecodable message ({reason}): {exc}")
            return
        m.chunks.inc()
        m.samples.inc(chunk.samples.shape[1])
        try:
            out = self.table.push(chunk, now)
        except Exception as exc:  # a bug or odd input in one stream's DSP must not stop the others
            self.table.forget(chunk.stream_id)
            m.drops.labels("internal_error").inc()
            self._log_once(chunk.stream_id, "internal_error", f"stream state dropped after {type(exc).__name__}: {exc}")
            return
        for event in out.events:
            if event not in ("duplicate", "out_of_order"):
                m.events.labels(event).inc()
        if out.dropped:
            m.drops.labels(out.dropped).inc()
        if out.refusal is not None:
            refusal = out.refusal
            m.refusals.labels(refusal.reason).inc()
            log.warning("stream %s refused (%s): %s", chunk.stream_id, refusal.reason, refusal.message)
            self.publisher.status(chunk.stream_id, "refused", refusal.reason, refusal.message)
        for window in out.windows:
            m.windows.inc()
            dropped = self.batcher.submit(window)
            if dropped:
                m.drops.labels("queue_full").inc(dropped)
        m.queue_depth.set(self.batcher.depth)

    def _hand_back(self, items: list[Inferred]) -> None:
        # Runs on the inference thread: the PUB socket belongs to the loop, so hand over and wake it.
        self._done.append(items)
        try:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the loop is already awake (queue full) or shutting down: it drains _done anyway

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _publish_done(self) -> None:
        m = self.metrics
        while self._done:
            items = self._done.popleft()
            m.batch_size.observe(items[0].batch_size)
            m.inference.labels("classify").observe(items[0].infer_s)
            m.inference.labels("label").observe(items[0].label_s)
            for item in items:
                m.queue_wait.observe(max(0.0, item.picked - item.enqueued))
            for result in self.publisher.results(items):
                m.results.inc()
                m.latency.observe(max(0.0, result.timing["published"] - result.timing["received"]))
                for iv in result.intervals:
                    m.intervals.labels(iv.label).inc()
                for c in result.alarms:
                    m.alarms.labels(c, "true" if c in result.located else "false").inc()

    def _housekeeping(self, now: float) -> None:
        for sid in self.table.evict_idle(now):
            self.metrics.events.labels("evicted").inc()
            self.publisher.forget(sid)
            self.publisher.status(sid, "info", "idle_evicted", "no chunks for a while; state dropped, next chunk starts fresh")
        for label, n in self.publisher.take_unconfirmed().items():
            self.metrics.intervals_unconfirmed.labels(label).inc(n)
        self.metrics.active_streams.set(len(self.table))
        self.metrics.queue_depth.set(self.batcher.depth)

    def _count_drop(self, reason: str, n: int) -> None:
        self.metrics.drops.labels(reason).inc(n)

    def _log_once(self, who: str, reason: str, text: str) -> None:
        key = (who, reason)
        if key in self._logged:
            return
        if len(self._logged) >= LOGGED_KEYS_MAX:
            self._logged.clear()
        self._logged.add(key)
        log.warning("from %s: %s (further ones from this peer with this reason are only counted)", who, text)

    def _shutdown(self) -> None:
        log.info("stopping: finishing %d queued windows", self.batcher.depth)
        self.batcher.stop(self.stop_timeout_s)
        self._publish_done()
        self._close_sockets()
        if self.metrics_server is not None:
            self.metrics_server.close()
        log.info("stopped")

    def _close_sockets(self) -> None:
        self.pull.close(0)
        self._wake_tx.close(0)
        self._wake_rx.close(0)
        self.pub.close(self.linger_ms)
        self.ctx.term()


def _peer(frame: zmq.Frame) -> str:
    try:
        return frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError, TypeError):
        return "unknown peer"
