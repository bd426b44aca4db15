"""Prometheus metrics of one worker, on its own registry so several workers can share a process.

Latency buckets are in seconds but millisecond-scaled, dense around the targets (p99 chunk ->
published <= 25 ms at 200 beds; an interval out <= 1.5 s after its beat).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import HTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["LATENCY_BUCKETS", "BATCH_BUCKETS", "Metrics", "MetricsServer"]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 1.5, 2.5,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class MetricsServer:
    """The HTTP endpoint serving a registry; `port` is the bound one (useful when asked for 0)."""

    httpd: HTTPServer
    thread: threading.Thread
    port: int

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5.0)


@dataclass
class Metrics:
    """Every series a worker exports; names start with stream_ecg_."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.chunks = Counter("stream_ecg_chunks", "Chunks decoded from the ingest socket.", registry=r)
        self.samples = Counter("stream_ecg_samples", "Raw samples per lead received in decoded chunks.", registry=r)
        self.windows = Counter("stream_ecg_windows", "Windows cut from streams and queued for inference.", registry=r)
        self.results = Counter("stream_ecg_results", "Results published.", registry=r)
        self.intervals = Counter("stream_ecg_intervals", "Abnormal-beat intervals published, by label.", ["label"], registry=r)
        self.alarms = Counter(
            "stream_ecg_alarms",
            "Published windows alarming for a class, by label and by located: whether the window also marked a beat of "
            "that class (Result.located); a located alarm is the one to page on (deploy/README.md).",
            ["label", "located"],
            registry=r,
        )
        self.intervals_unconfirmed = Counter(
            "stream_ecg_intervals_unconfirmed",
            "Intervals withheld because fewer windows lit them than the card's interval_rule.confirm asks, by label "
            "(always 0 with confirm 1).",
            ["label"],
            registry=r,
        )
        self.drops = Counter(
            "stream_ecg_drops",
            "Chunks or windows dropped, by reason (queue_full, duplicate, out_of_order, refused, ...).",
            ["reason"],
            registry=r,
        )
        self.decode_errors = Counter(
            "stream_ecg_decode_errors", "Ingest messages that failed to decode, by reason.", ["reason"], registry=r
        )
        self.refusals = Counter("stream_ecg_refusals", "Streams refused by the model card, by reason.", ["reason"], registry=r)
        self.events = Counter("stream_ecg_stream_events", "Stream health events (gap, resync, evicted).", ["event"], registry=r)
        self.latency = Histogram(
            "stream_ecg_latency_seconds",
            "Arrival of the chunk completing a window -> its result published.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "stream_ecg_inference_seconds",
            "Per batch: the model call (stage=classify) and interval labelling (stage=label).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "stream_ecg_queue_wait_seconds", "Window queued -> taken by the inference thread.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("stream_ecg_batch_size", "Windows per inference batch.", buckets=BATCH_BUCKETS, registry=r)
        self.active_streams = Gauge("stream_ecg_active_streams", "Streams with state in this worker.", registry=r)
        self.queue_depth = Gauge("stream_ecg_queue_depth", "Windows waiting for inference.", registry=r)
        self.model_info = Gauge(
            "stream_ecg_model_info", "The served model (value 1).", ["model", "version", "backend"], registry=r
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> MetricsServer:
        """Expose /metrics over HTTP on a daemon thread; port 0 picks a free one."""
        httpd, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(httpd, thread, int(httpd.server_port))
