"""The `stream-ecg` command line: thin shells over the library modules."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Streaming ECG arrhythmia inference.")
data_app = typer.Typer(no_args_is_help=True, help="MIT-BIH and other PhysioNet data.")
app.add_typer(data_app, name="data")
console = Console()


@app.command()
def version() -> None:
    """Print the package version."""
    console.print(__version__)


def _model_dir(model: Path | None) -> Path:
    """--model, or the shipped default (edge_models/DEFAULT); exits with the reason if neither exists."""
    from .card import CardError, default_model_dir, load_card

    try:
        path = model if model is not None else default_model_dir()
        load_card(path, verify_files=False)
    except CardError as exc:
        console.print(f"[red]no model to serve:[/] {exc}")
        raise typer.Exit(2) from None
    return path


def _records(records: str) -> list[str]:
    names = [r.strip() for r in records.split(",") if r.strip()]
    if not names:
        raise typer.BadParameter("name at least one record, e.g. --records 100,208")
    return names


def _log(level: str) -> None:
    import logging

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def _until_signal() -> Iterator[threading.Event]:
    """An event SIGTERM/SIGINT set, so long-running commands end cleanly under systemd or Ctrl-C."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def serve(
    model: Path | None = typer.Option(None, help="Model folder (card.json + weights); default: the one edge_models/DEFAULT names."),
    ingest: str = typer.Option("tcp://*:5555", help="ZeroMQ endpoint the PULL socket binds for Chunks from bed gateways."),
    publish: str = typer.Option("tcp://*:5556", help="ZeroMQ endpoint the PUB socket binds for Results/Status (topic = stream id)."),
    metrics_port: int = typer.Option(9108, min=0, help="Prometheus /metrics HTTP port (0 = any free port)."),
    backend: str = typer.Option("onnxruntime", help="onnxruntime | torch | tensorrt."),
    max_batch: int = typer.Option(32, min=1, help="Most windows per inference batch."),
    max_wait_ms: float = typer.Option(5.0, min=0.0, help="Longest a window waits for its batch to fill."),
    hwm: int = typer.Option(10_000, min=1, help="High-water mark (messages) of the ingest and publish sockets."),
    idle_s: float = typer.Option(60.0, min=1.0, help="Drop a stream's state after this long without chunks."),
    threads: int = typer.Option(1, min=1, help="Intra-op threads of the model (the socket loop needs its own core)."),
    max_queue: int = typer.Option(2048, min=1, help="Windows waiting for inference before the oldest are dropped."),
    stop_timeout_s: float = typer.Option(30.0, min=0.0, help="On SIGTERM/SIGINT, how long queued windows may still be "
                                         "inferred and published; the rest are dropped and counted (reason shutdown)."),
    log_level: str = typer.Option("info", help="debug | info | warning | error."),
) -> None:
    """Serve the model: PULL chunks, window them per stream, infer in micro-batches, PUB results."""
    from .card import CardError
    from .infer import BackendUnavailable
    from .worker import Worker

    _log(log_level)
    try:
        worker = Worker(
            _model_dir(model), ingest, publish, metrics_port, backend, max_batch, max_wait_ms, hwm, idle_s,
            threads=threads, max_queue=max(max_queue, max_batch), stop_timeout_s=stop_timeout_s,
        )
    except (BackendUnavailable, CardError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    typer.echo(
        f"stream-ecg serve ready: model {worker.card.name} {worker.card.version} ({worker.model.backend}), "
        f"ingest {worker.ingest_endpoint}, publish {worker.publish_endpoint}, metrics port {worker.metrics_port}"
    )
    sys.stdout.flush()
    worker.run()


@app.command()
def replay(
    connect: str = typer.Option("tcp://127.0.0.1:5555", help="Ingest endpoint of a running `stream-ecg serve`."),
    data: Path | None = typer.Option(None, help="WFDB directory; default: the bundled MIT-BIH excerpt."),
    records: str = typer.Option(",".join(("208", "232", "100")), help="Comma-separated record names."),
    beds: int | None = typer.Option(None, min=1, help="Number of beds (records repeat with distinct stream ids); default one per record."),
    chunk_ms: float = typer.Option(250.0, min=1.0, help="Chunk length a bed gateway sends, in ms."),
    speed: float = typer.Option(1.0, min=0.0, help="1 = real time, N = N times faster, 0 = as fast as possible."),
    seconds: float | None = typer.Option(None, min=0.1, help="Stream seconds per bed (default: the whole record)."),
    loop: bool = typer.Option(False, help="Start the record again at its end (with --seconds, or until Ctrl-C)."),
    prefill_s: float = typer.Option(0.0, min=0.0, help="Send this much of each stream at once, so windows flow from the start."),
    prefix: str = typer.Option("bed", help="Stream ids are PREFIX-NNN-RECORD."),
) -> None:
    """Play WFDB records as live bedside streams into a worker."""
    from .replay import ReplayError, load_beds, replay as run_replay

    bed_list = load_beds(_records(records), data, beds, prefix)
    try:
        with _until_signal() as stop:
            stats = run_replay(connect, bed_list, chunk_ms, speed, seconds, loop, prefill_s, stop=stop)
    except ReplayError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(
        f"sent {stats.chunks} chunks ({stats.bytes / 1e6:.1f} MB) from {len(bed_list)} beds, "
        f"{stats.stream_s:.1f} s of stream each, in {stats.wall_s:.1f} s"
    )


@app.command()
def subscribe(
    connect: str = typer.Option("tcp://127.0.0.1:5556", help="Publish endpoint of a running `stream-ecg serve`."),
    stream: str | None = typer.Option(None, help="One stream id (default: all)."),
    jsonl: bool = typer.Option(False, help="Print one JSON object per Result/Status instead of the dashboard."),
    duration: float | None = typer.Option(None, min=0.1, help="Stop after this many seconds (default: Ctrl-C)."),
) -> None:
    """Watch results: a live terminal dashboard per bed, or JSON lines for piping."""
    from .subscribe import run_dashboard, run_jsonl

    with _until_signal() as stop:
        if jsonl:
            run_jsonl(connect, stream, duration=duration, stop=stop)
        else:
            run_dashboard(connect, stream, duration, stop, console)


@app.command()
def record(
    out: Path = typer.Option(..., help="Directory for the annotation files (one per stream)."),
    connect: str = typer.Option("tcp://127.0.0.1:5556", help="Publish endpoint of a running `stream-ecg serve`."),
    stream: str | None = typer.Option(None, help="One stream id (default: all)."),
    extension: str = typer.Option("sea", help="Annotation file extension (letters only), e.g. sea or test."),
    duration: float | None = typer.Option(None, min=0.1, help="Stop after this many seconds (default: Ctrl-C / SIGTERM)."),
) -> None:
    """Write published abnormal-beat intervals as WFDB annotations (V for V, A for S) for rdann/bxb."""
    from .record import run_record

    with _until_signal() as stop:
        written = run_record(connect, out, stream, extension, duration, stop)
    for sid, path in written.items():
        console.print(f"{sid}: {path}")
    if not written:
        console.print("no intervals were published; nothing written")


@app.command()
def evaluate(
    records: str = typer.Option("excerpt", help="DS2 | DS1 | excerpt | all (every record in --data with .atr) | comma-separated record names."),
    data: Path | None = typer.Option(None, help="WFDB directory (any PhysioNet database); default: the bundled excerpt for `excerpt`, else MIT-BIH (STREAM_ECG_MITDB or ../shared/data/mitdb)."),
    model: Path | None = typer.Option(None, help="Model folder; default: the one edge_models/DEFAULT names. With --connect-*, the folder of the model that worker serves."),
    connect_ingest: str | None = typer.Option(None, help="Ingest endpoint of a running `stream-ecg serve` (with --connect-publish); default: start one in-process on loopback."),
    connect_publish: str | None = typer.Option(None, help="Publish endpoint of that worker."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the scores as JSON to this file."),
    report: Path | None = typer.Option(None, help="Write a self-contained HTML report (report.html) into this directory."),
    also_write_wfdb: Path | None = typer.Option(None, help="Also write the published intervals as WFDB annotations <record>.sea here, for PhysioNet's bxb."),
    speed: float = typer.Option(0.0, min=0.0, help="0 = as fast as the worker keeps up (paced so its queue never overflows); N = N x real time."),
    chunk_ms: float = typer.Option(250.0, min=1.0, help="Chunk length the replayed gateways send, in ms."),
    max_outstanding: int = typer.Option(64, min=1, help="Most windows sent but not yet published (pacing at max speed)."),
    backend: str = typer.Option("onnxruntime", help="Backend of the in-process worker: onnxruntime | torch | tensorrt."),
    threads: int = typer.Option(1, min=1, help="Model threads of the in-process worker."),
    skip_s: float = typer.Option(300.0, min=0.0, help="The from-5-min scores start here (EC57 skips the first 5 min)."),
    progress: bool = typer.Option(True, help="Show a progress bar while streaming."),
) -> None:
    """Score the live path: replay records into a worker, collect every published result, score against the annotations.

    Beat-level Se/+P per AAMI class (EC57 150 ms window, whole record and from 5 min), window-level
    Se/precision/AUC and confusion matrices, localisation grade I/II/III, alarm latency and
    throughput. Exits 3 (after writing everything) when windows were lost on the way.
    """
    import json

    from .card import CardError
    from .data import MitdbMissing, RecordNotFound
    from .infer import BackendUnavailable
    from .live_eval import EvalSettings, EvaluateError, evaluate as run_evaluate, resolve_records, summarise, write_wfdb

    if (connect_ingest is None) != (connect_publish is None):
        raise typer.BadParameter("give both --connect-ingest and --connect-publish, or neither")
    model_dir = _model_dir(model)
    settings = EvalSettings(chunk_ms=chunk_ms, speed=speed, max_outstanding=max_outstanding, skip_s=skip_s, progress=progress)
    connect = (connect_ingest, connect_publish) if connect_ingest is not None else None
    try:
        names, directory = resolve_records(records, data)
        run = run_evaluate(names, directory, model_dir, settings, connect, backend, threads)
    except (EvaluateError, MitdbMissing, RecordNotFound, CardError, BackendUnavailable) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1 if isinstance(exc, EvaluateError) else 2) from None
    summary = summarise(run, "stream-ecg " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["evaluate"] else "stream-ecg evaluate")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
    if report is not None:
        from .report_html import write_report

        try:
            console.print(f"report: {write_report(summary, run, report)}")
        except EvaluateError as exc:
            console.print(f"[red]{exc}[/]")
    if also_write_wfdb is not None:
        written = write_wfdb(run, also_write_wfdb)
        console.print(f"WFDB annotations: {len(written)} files in {also_write_wfdb} (e.g. bxb -r 100 -a atr sea -f 0)")
    _print_evaluation(summary)
    if summary["drops"]["windows_missing"]:
        raise typer.Exit(3)


def _print_evaluation(s: dict) -> None:
    def pct(v) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    table = Table(title=f"stream-ecg evaluate: {len(s['records'])} records, model {s['model']['name']} {s['model']['version']}")
    for col in ("class", "beats", "Se %", "+P %", "+P % EC57", "Se % from 5 min", "+P % from 5 min", "win Se %", "win prec %", "AUC"):
        table.add_column(col, justify="right")
    for c in ("V", "S"):
        b, f, w = s["beat"][c], s["from_5_min"]["beat"][c], s["window"].get(c, {})
        auc = w.get("auc")
        table.add_row(c, str(b["beats"]), pct(b["se"]), pct(b["ppv"]), pct(b.get("ppv_ec57")), pct(f["se"]), pct(f["ppv"]),
                      pct(w.get("se")), pct(w.get("precision")), "n/a" if auc is None else f"{auc:.3f}")
    console.print(table)
    loc = s.get("window_located", {})
    if loc:  # an alarm the window also placed at a beat (Result.located)
        console.print("located alarms (window Se / precision): " + "; ".join(
            f"{c} {pct(loc[c]['se'])} / {pct(loc[c]['precision'])} %" for c in ("V", "S") if c in loc))
    g, lat, d = s["grade"], s["alarm_latency_s"], s["drops"]
    console.print(f"grade I/II/III: {pct(g['I'])} / {pct(g['II'])} / {pct(g['III'])} % of {g['windows']} abnormal windows")
    fmt = (lambda v: "n/a" if v is None else f"{v:.2f}")
    console.print(f"alarm latency p50/p95/max: {fmt(lat['p50'])} / {fmt(lat['p95'])} / {fmt(lat['max'])} s over {lat['n']} beats; "
                  f"{fmt(s['realtime_factor'])} x real time")
    if d["windows_missing"] or d["refused"]:
        console.print(f"[red]{d['windows_missing']} of {d['windows_expected']} windows were lost (worker drops {d['worker']}); "
                      f"refused: {d['refused']}. The scores leave those windows out.[/]")


@app.command()
def bench(
    beds: int = typer.Option(200, min=1, help="Simulated beds (cycling through the bundled excerpt records)."),
    seconds: float = typer.Option(10.0, min=0.5, help="Seconds per phase (real time, then max speed)."),
    backend: list[str] = typer.Option(["onnxruntime"], help="Backend to bench; repeat the option for several."),
    model: Path | None = typer.Option(None, help="Model folder; default: the one edge_models/DEFAULT names."),
    speed: float = typer.Option(1.0, min=0.01, help="Speed of the latency phase (1 = real time)."),
    chunk_ms: float = typer.Option(250.0, min=1.0, help="Chunk length the simulated gateways send."),
    max_batch: int = typer.Option(32, min=1, help="Worker max batch."),
    max_wait_ms: float = typer.Option(5.0, min=0.0, help="Worker max wait for a batch to fill."),
    baseline: bool = typer.Option(True, help="Also time the paper-size baseline (needs torch)."),
    baseline_seconds: float = typer.Option(10.0, min=0.5, help="How long to time the baseline."),
    baseline_threads: int = typer.Option(1, min=1, help="torch threads for the baseline."),
    memory_streams: int = typer.Option(1000, min=0, help="Also measure RSS growth for this many streams (0 = skip)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Throughput, latency, CPU and memory of the live path, beside the paper-size baseline."""
    import json

    from .bench import BenchSettings, run_bench

    settings = BenchSettings(
        beds=beds, seconds=seconds, speed=speed, chunk_ms=chunk_ms, max_batch=max_batch, max_wait_ms=max_wait_ms,
        baseline=baseline, baseline_seconds=baseline_seconds, baseline_threads=baseline_threads,
        memory_streams=memory_streams,
    )
    report = run_bench(_model_dir(model), backend, settings)
    if json_out:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"stream-ecg bench: {beds} beds, {seconds:g} s per phase")
    for col in ("backend", "windows/s", "beds real time", "p50 ms", "p99 ms", "CPU %", "RSS MB", "baseline w/s", "ratio"):
        table.add_column(col, justify="right")
    for run in report["runs"]:
        b = run["baseline"]
        table.add_row(
            run["backend"], f"{run['windows_per_s']:.0f}", str(run["beds_realtime"]),
            str(run["latency_ms"]["p50"]), str(run["latency_ms"]["p99"]), f"{run['cpu_percent']:.0f}",
            f"{run['rss_mb']:.0f}", str(b.get("windows_per_s")), str(b.get("ratio")),
        )
    console.print(table)


@app.command("bench-gate")
def bench_gate(
    base: Path | None = typer.Option(None, help="The model to beat (default: the one edge_models/DEFAULT names)."),
    candidate: Path | None = typer.Option(None, help="The model that would replace it."),
    pairs: int = typer.Option(3, min=1, help="Bench runs per model, alternating, base first."),
    beds: int = typer.Option(120, min=1, help="Simulated beds: a load this machine keeps up with."),
    seconds: float = typer.Option(10.0, min=0.5, help="Seconds per phase."),
    max_ratio: float = typer.Option(1.25, min=1.0, help="The candidate's median p99 may be at most this x the base's."),
    base_files: str = typer.Option("", help="Judge saved `stream-ecg bench --json` reports instead (comma-separated)."),
    candidate_files: str = typer.Option("", help="The candidate's saved reports, with --base-files."),
    out: Path | None = typer.Option(None, help="Also write each run's report and the verdict into this folder."),
) -> None:
    """The relative serving gate: a candidate against the base model, benched alternately on this machine (or from saved
    reports). Prints the verdict as JSON; exits 1 if it does not hold."""
    import json

    from .bench import BenchSettings, relative_gate, run_bench

    if base_files or candidate_files:
        if not (base_files and candidate_files):
            raise typer.BadParameter("--base-files and --candidate-files go together")
        read = lambda names: [json.loads(Path(n).read_text()) for n in names.split(",") if n]  # noqa: E731
        try:
            b_runs, c_runs = read(base_files), read(candidate_files)
        except (OSError, json.JSONDecodeError) as exc:
            console.print(f"[red]cannot read a bench report:[/] {exc}")
            raise typer.Exit(2) from None
    else:
        if candidate is None:
            raise typer.BadParameter("--candidate is needed (or --base-files and --candidate-files)")
        base_dir, cand_dir = _model_dir(base), _model_dir(candidate)
        settings = BenchSettings(beds=beds, seconds=seconds, baseline=False, memory_streams=0)
        b_runs, c_runs = [], []
        for n, (runs, d) in enumerate([(b_runs, base_dir), (c_runs, cand_dir)] * pairs, start=1):
            runs.append(run_bench(d, ["onnxruntime"], settings))
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"gate_{n}_{d.name}.json").write_text(json.dumps(runs[-1]))
    try:
        verdict = relative_gate(b_runs, c_runs, max_ratio)
    except (ValueError, KeyError) as exc:
        console.print(f"[red]cannot judge the gate:[/] {exc}")
        raise typer.Exit(2) from None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gate.json").write_text(json.dumps(verdict, indent=1))
    typer.echo(json.dumps(verdict))
    raise typer.Exit(0 if verdict["holds"] else 1)


@app.command()
def demo(
    duration: float = typer.Option(20.0, min=1.0, help="Seconds the live demo runs before it exits."),
    speed: float = typer.Option(1.0, min=0.0, help="Replay speed of the live demo (1 = real time)."),
    model: Path | None = typer.Option(None, help="Model folder; default: the shipped edge_models/DEFAULT."),
    dsp_only: bool = typer.Option(False, help="Skip the live demo: stream one record through the DSP and summarise."),
    record: str | None = typer.Option(None, help="Record for the DSP summary [default: 208]; giving it selects the summary."),
    data: Path | None = typer.Option(None, help="WFDB directory; default: the bundled MIT-BIH excerpt."),
    chunk_ms: float = typer.Option(250.0, min=1.0, help="Chunk length a bed gateway would send, in ms."),
    window: int | None = typer.Option(None, min=16, help="DSP summary window in model samples [default: 2000]; selects the summary."),
    hop: int | None = typer.Option(None, min=1, help="DSP summary hop in model samples [default: 360]; selects the summary."),
) -> None:
    """Live: serve the shipped model, replay the bundled excerpt as beds, show the dashboard for --duration s.

    With --dsp-only, --record, --window or --hop (the DSP summary's options), or without a shipped
    model, it streams one record through the wire codec and the streaming DSP and summarises what a
    model would see.
    """
    from .card import CardError, default_model_dir, load_card

    if not (dsp_only or record is not None or window is not None or hop is not None):
        try:
            model_dir = model if model is not None else default_model_dir()
            load_card(model_dir)
        except CardError as exc:
            console.print(f"[yellow]No model is shipped yet ({exc}); showing the DSP summary instead.[/]")
        else:
            _live_demo(model_dir, data, chunk_ms, speed, duration)
            return
    record, window, hop = record or "208", window or 2000, hop or 360
    from .demo import run_dsp_demo

    summary = run_dsp_demo(record=record, data_dir=data, chunk_ms=chunk_ms, window=window, hop=hop)
    table = Table(title=f"stream-ecg demo: record {record} streamed in {chunk_ms:g} ms chunks")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)


def _live_demo(model_dir: Path, data: Path | None, chunk_ms: float, speed: float, duration: float) -> None:
    """Worker and replay on background threads over loopback, the dashboard in front, all stopped after duration."""
    from .replay import EXCERPT_RECORDS, load_beds, replay
    from .subscribe import run_dashboard
    from .worker import Worker

    worker = Worker(model_dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", metrics_port=None)
    served = worker.start()
    card = worker.card
    beds = load_beds(EXCERPT_RECORDS, data, prefix="demo")
    ready = threading.Event()

    def play(stop: threading.Event) -> None:
        ready.wait(5)  # the dashboard has subscribed
        replay(worker.ingest_endpoint, beds, chunk_ms, speed, loop=True, prefill_s=card.window / card.fs,
               stagger_s=card.hop / card.fs, progress=False, stop=stop)

    console.print(f"[bold]stream-ecg live demo[/]: {card.name} {card.version}, {len(beds)} beds from the MIT-BIH excerpt, {duration:g} s")
    with _until_signal() as stop:
        player = threading.Thread(target=play, args=(stop,), daemon=True)
        player.start()
        try:
            run_dashboard(worker.publish_endpoint, None, duration, stop, console, ready)
        finally:
            stop.set()
            player.join(15)
            worker.stop()
            served.join(30)


@data_app.command("fetch")
def data_fetch(dest: Path = typer.Argument(Path("data/mitdb"), help="Where to put the 48 records.")) -> None:
    """Download the MIT-BIH Arrhythmia Database from PhysioNet (needs internet)."""
    from .data.locate import fetch_mitdb

    t0 = time.perf_counter()
    path = fetch_mitdb(dest)
    console.print(f"MIT-BIH in {path} ({time.perf_counter() - t0:.0f} s). Use it with: export STREAM_ECG_MITDB={path}")


@data_app.command("report")
def data_report(data: Path | None = typer.Option(None, help="MIT-BIH directory (default: STREAM_ECG_MITDB or ../shared/data/mitdb).")) -> None:
    """Print the DS1/DS2 AAMI counts and the paper-segment counts beside the published ones."""
    from .data.report import main as report_main

    report_main([] if data is None else ["--data-dir", str(data)])


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
