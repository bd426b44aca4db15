"""The `stream-ecg` command line: thin shells over the library modules."""

from __future__ import annotations

import time
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


@app.command()
def demo(
    record: str = typer.Option("208", help="Record name in the data directory."),
    data: Path | None = typer.Option(None, help="WFDB directory; default: the bundled MIT-BIH excerpt."),
    chunk_ms: float = typer.Option(250.0, min=1.0, help="Chunk length a bed gateway would send, in ms."),
    window: int = typer.Option(2000, min=16, help="Window length in model samples."),
    hop: int = typer.Option(360, min=1, help="Hop between windows in model samples."),
) -> None:
    """Replay one record through the wire codec and the streaming DSP, and summarise what a model would see."""
    from .demo import run_dsp_demo

    summary = run_dsp_demo(record=record, data_dir=data, chunk_ms=chunk_ms, window=window, hop=hop)
    table = Table(title=f"stream-ecg demo: record {record} streamed in {chunk_ms:g} ms chunks")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)


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
