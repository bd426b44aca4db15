"""`stream-ecg bench`: simulated beds through a real worker over loopback, beside the paper's baseline.

Per backend, two phases against one in-process worker, with the load generator (`replay`) in a
child process so it does not share the worker's GIL (it does share the machine's cores):
  1. real time (`speed`, default 1x): N beds, latency from chunk arrival to result published;
  2. max speed: the same beds as fast as the worker takes them, for throughput (windows/s);
     beds sustainable in real time = windows/s / (fs / hop).
The paper-size baseline is the joint model in the authors' configuration, torch eager, batch 1,
window by window, as their code runs it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .replay import EXCERPT_RECORDS
from .subscribe import messages
from .worker import Worker

__all__ = ["BenchSettings", "relative_gate", "rss_mb", "run_bench", "run_baseline", "stream_memory"]


@dataclass(frozen=True)
class BenchSettings:
    beds: int = 200
    seconds: float = 10.0
    speed: float = 1.0
    chunk_ms: float = 250.0
    max_batch: int = 32
    max_wait_ms: float = 5.0
    threads: int = 1
    baseline: bool = True
    baseline_seconds: float = 10.0
    baseline_threads: int = 1
    memory_streams: int = 1000


def rss_mb() -> float:
    """Resident set size of this process now (psutil if installed, else /proc, else the peak)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _generate(endpoint: str, beds: int, chunk_ms: float, speed: float, seconds: float | None,
              prefill_s: float, stagger_s: float, stop) -> None:
    """Child-process entry: replay `beds` excerpt beds to endpoint."""
    from .replay import load_beds, replay

    replay(endpoint, load_beds(EXCERPT_RECORDS, beds=beds), chunk_ms=chunk_ms, speed=speed, seconds=seconds,
           loop=True, prefill_s=prefill_s, stagger_s=stagger_s, progress=False, stop=stop)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    a = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3)}


def _counter(worker: Worker, name: str, labels: dict | None = None) -> float:
    return worker.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def _bench_backend(model_dir: Path, backend: str, s: BenchSettings) -> dict:
    worker = Worker(
        model_dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", metrics_port=None, backend=backend,
        max_batch=s.max_batch, max_wait_ms=s.max_wait_ms, idle_s=3600.0, threads=s.threads, max_queue=4096,
    )
    card = worker.card
    thread = worker.start()
    ingest, publish = worker.ingest_endpoint, worker.publish_endpoint
    prefill_s = card.window / card.fs + 0.5
    stagger_s = card.hop / card.fs
    ctx = mp.get_context("spawn")
    try:
        # Phase 1: real time, latency.
        lat, e2e = [], []
        stop_sub, ready = threading.Event(), threading.Event()

        def collect() -> None:
            for msg in messages(publish, stop=stop_sub, ready=ready):
                if getattr(msg, "timing", None) and msg.t_end > prefill_s + 1.0:
                    lat.append(msg.timing["published"] - msg.timing["received"])
                    if "sent" in msg.timing:
                        e2e.append(time.time() - msg.timing["sent"])

        sub = threading.Thread(target=collect, daemon=True)
        sub.start()
        ready.wait(5)
        time.sleep(0.3)  # let the subscription reach the PUB socket
        cpu0, t0, res0 = _cpu_s(), time.time(), _counter(worker, "stream_ecg_results_total")
        gen = ctx.Process(target=_generate, args=(ingest, s.beds, s.chunk_ms, s.speed, prefill_s + s.seconds,
                                                   prefill_s, stagger_s, None), daemon=True)
        gen.start()
        gen.join(prefill_s + s.seconds / max(s.speed, 1e-9) + stagger_s + 120)
        _wait_idle(worker)
        wall = time.time() - t0
        cpu_pct = 100 * (_cpu_s() - cpu0) / wall
        rss = rss_mb()
        realtime_results = _counter(worker, "stream_ecg_results_total") - res0
        stop_sub.set()
        sub.join(5)

        # Phase 2: max speed, throughput.
        stop = ctx.Event()
        gen = ctx.Process(target=_generate, args=(ingest, s.beds, s.chunk_ms, 0.0, None, 0.0, 0.0, stop), daemon=True)
        drops0 = _counter(worker, "stream_ecg_drops_total", {"reason": "queue_full"})
        gen.start()
        time.sleep(min(2.0, s.seconds / 2))  # warm-up: child start-up and the first windows
        cpu1, t1, res1 = _cpu_s(), time.time(), _counter(worker, "stream_ecg_results_total")
        time.sleep(s.seconds)
        wall2 = time.time() - t1
        windows_per_s = (_counter(worker, "stream_ecg_results_total") - res1) / wall2
        cpu_pct2 = 100 * (_cpu_s() - cpu1) / wall2
        stop.set()
        gen.join(30)
        if gen.is_alive():
            gen.terminate()
        drops = _counter(worker, "stream_ecg_drops_total", {"reason": "queue_full"}) - drops0
        rss = max(rss, rss_mb())
    finally:
        worker.stop()
        thread.join(120)  # the worker's own stop is bounded (MicroBatcher.stop): a backlog past 30 s is dropped and counted
    per_bed = card.fs / card.hop
    return {
        "backend": backend,
        "model": {"name": card.name, "version": card.version, "window": card.window, "hop": card.hop, "fs": card.fs},
        "beds": s.beds,
        "seconds": s.seconds,
        "windows_per_s": round(windows_per_s, 1),
        "beds_realtime": int(windows_per_s / per_bed),
        "latency_ms": _percentiles(lat),
        "e2e_latency_ms": _percentiles(e2e),
        "realtime": {
            "speed": s.speed,
            "offered_windows_per_s": round(s.beds * per_bed * s.speed, 1),
            "results": int(realtime_results),
            "latency_samples": len(lat),
            "cpu_percent": round(cpu_pct, 1),
        },
        "max_speed": {"cpu_percent": round(cpu_pct2, 1), "dropped_queue_full": int(drops)},
        "cpu_percent": round(cpu_pct, 1),
        "rss_mb": round(rss, 1),
    }


def _wait_idle(worker: Worker, timeout: float = 30.0) -> None:
    """Until the worker has read, inferred and published everything sent so far."""
    deadline = time.monotonic() + timeout
    last, still = -1.0, 0
    while time.monotonic() < deadline:
        n = _counter(worker, "stream_ecg_chunks_total")
        still = still + 1 if n == last and worker.batcher.idle() else 0
        if still >= 3:
            return
        last = n
        time.sleep(0.1)


def run_baseline(seconds: float = 10.0, threads: int = 1, window: int = 2000) -> dict:
    """The paper-size joint model, torch eager, batch 1, window by window; windows/s."""
    try:
        import torch

        from trainer.model import JointModel, JointModelConfig, count_flops
    except ImportError as exc:
        return {"windows_per_s": None, "ratio": None, "note": f"skipped: {exc} (pip install 'stream-ecg[trainer]')"}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = JointModelConfig.paper_size(in_leads=2)
        net = JointModel(cfg).eval()
        x = torch.randn(1, 2, window)
        n = 0
        with torch.no_grad():
            for _ in range(2):
                net(x)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                net(x)
                n += 1
            wall = time.perf_counter() - t0
        return {
            "windows_per_s": round(n / wall, 1),
            "gflop_per_window": round(count_flops(cfg, window) / 1e9, 2),
            "torch_threads": threads,
            "config": "JointModelConfig.paper_size(in_leads=2), eval, torch.no_grad, batch 1",
        }
    finally:
        torch.set_num_threads(previous)


def stream_memory(model_dir: Path, n: int = 1000, seconds: float = 7.0) -> dict:
    """RSS growth for n streams each fed `seconds` of excerpt (enough to fill the ring), in a fresh process."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_stream_memory, (str(model_dir), n, seconds))


def _stream_memory(model_dir: str, n: int, seconds: float) -> dict:
    from .buffer import StreamTable
    from .card import load_card
    from .data import excerpt_dir, load_record
    from .wire import Chunk

    card = load_card(model_dir)
    rec = load_record("208", excerpt_dir())
    step = int(rec.fs / 4)
    chunks = [rec.signal[:, a : a + step] for a in range(0, int(seconds * rec.fs), step)]
    table = StreamTable(card, idle_s=3600.0, max_streams=n + 1)
    before = rss_mb()
    for i in range(n):
        for seq, x in enumerate(chunks):
            table.push(Chunk(f"mem-{i}", seq, seq * step, rec.fs, rec.leads, x), 0.0)
    grown = rss_mb() - before
    per = max(s.nbytes for s in table.streams.values())
    return {"streams": n, "seconds_each": seconds, "rss_delta_mb": round(grown, 1), "state_bytes_per_stream": per}


def run_bench(model_dir: Path | str, backends: list[str] | tuple[str, ...] = ("onnxruntime",),
              settings: BenchSettings = BenchSettings()) -> dict:
    """The whole bench; the first backend's numbers are at the top level, every backend under "runs"."""
    model_dir = Path(model_dir)
    load_start = os.getloadavg()[0]
    runs = [_bench_backend(model_dir, b, settings) for b in backends]
    if settings.baseline:
        baseline = run_baseline(settings.baseline_seconds, settings.baseline_threads)
    else:
        baseline = {"windows_per_s": None, "note": "skipped (--no-baseline)"}
    for run in runs:
        b = baseline.get("windows_per_s")
        run["baseline"] = {**baseline, "ratio": round(run["windows_per_s"] / b, 1) if b else None}
    out = dict(runs[0])
    out["runs"] = runs
    out["memory"] = stream_memory(model_dir, settings.memory_streams) if settings.memory_streams else None
    # Other work on the machine moves these numbers: the load before and after says how much there was.
    out["machine"] = {"cpus": os.cpu_count(), "load_avg_1m_start": round(load_start, 2), "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    out["command_settings"] = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
    return out


def relative_gate(base: list[dict], candidate: list[dict], max_ratio: float = 1.25) -> dict:
    """Does a candidate serve about as well as the base model on this machine? Both benched alternately (`run_bench`
    reports) at a load the machine keeps up with; it holds if every run published as many results as the fullest one
    and the candidate's median p99 is at most max_ratio x the base's. Why relative: an absolute p99 target at a load
    the machine cannot keep up with judges the machine, not the model."""
    if not base or not candidate:
        raise ValueError("the gate needs at least one run of each model")
    settings = {(r["beds"], r["seconds"], r["backend"]) for r in base + candidate}
    if len(settings) != 1:
        raise ValueError(f"runs differ in beds, seconds or backend: {sorted(settings)}")

    def side(runs: list[dict]) -> dict:
        p99 = [float(r["latency_ms"]["p99"]) for r in runs]
        return {"model": sorted({r["model"]["name"] for r in runs}), "p99_ms": p99, "median_p99_ms": float(np.median(p99)),
                "results": [int(r["realtime"]["results"]) for r in runs], "windows_per_s": [r["windows_per_s"] for r in runs]}

    b, c = side(base), side(candidate)
    if b["median_p99_ms"] <= 0:
        raise ValueError("the base runs have no latency (median p99 0 ms): nothing was published in real time")
    full = max(b["results"] + c["results"])
    ratio = c["median_p99_ms"] / b["median_p99_ms"]
    all_published = all(n == full for n in b["results"] + c["results"])
    return {"base": b, "candidate": c, "beds": base[0]["beds"], "max_ratio": max_ratio, "ratio": round(ratio, 4),
            "all_published": all_published, "holds": bool(all_published and ratio <= max_ratio)}
