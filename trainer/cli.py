"""The `trainer` command line: build, train, evaluate and export the joint model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Train, evaluate and export stream-ecg models.")
experiment_app = typer.Typer(no_args_is_help=True, help="Reproducible experiments that write docs/results/*.json.")
app.add_typer(experiment_app, name="experiment")


def _command() -> str:
    return "trainer " + " ".join(sys.argv[1:])


@app.command()
def train(
    method: str = typer.Option("l2", help="classifier_only | cascaded | relu_max | l2"),
    out: Path = typer.Option(Path("runs/paper_l2"), help="Folder for checkpoint.pt and metrics.json."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory (default: STREAM_ECG_MITDB or ../shared/data/mitdb)."),
    epochs: int = typer.Option(12, min=1),
    kernel: int = typer.Option(151, help="Attention pooling kernel (odd, samples)."),
    seed: int = typer.Option(0),
    test_fold: int = typer.Option(0, min=0, max=4, help="Which of the 5 stratified folds is held out for testing."),
) -> None:
    """Train one method on the paper's PVC-vs-APB segments, test on one held-out fold, save checkpoint + metrics."""
    from .datasets import paper_dataset
    from .model import JointModelConfig
    from .paper import _validation_split, localisation, segment_splits
    from .train import TrainConfig, predict, save_checkpoint, train_model
    from stream_ecg.intervals import IntervalRule
    from stream_ecg.scoring import binary_metrics

    ds = paper_dataset(data)
    tr, te = segment_splits(ds, 5, seed)[test_fold]
    sub_tr, sub_va = _validation_split(ds.y[tr], None, seed)
    mcfg = JointModelConfig.for_method(method, pool_kernel=kernel)
    tcfg = TrainConfig(epochs=epochs, seed=seed, progress=sys.stderr.isatty())
    res = train_model(mcfg, tcfg, (ds.x[tr[sub_tr]], ds.y[tr[sub_tr]]), (ds.x[tr[sub_va]], ds.y[tr[sub_va]]), desc=method)
    probs, maps = predict(res.model, ds.x[te])
    metrics = binary_metrics(ds.y[te], probs[:, 0], positive=0)
    loc, _ = localisation(ds, _scatter(maps, te, ds), IntervalRule(), te)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint.pt", res, mcfg, tcfg)
    report = {"test": metrics, "localisation": loc, "history": res.history, "best_epoch": res.best_epoch,
              "train_seconds": res.seconds, "command": _command()}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    typer.echo(json.dumps({"test": metrics, "localisation": loc["grade"], "train_seconds": round(res.seconds)}, indent=2))


def _scatter(maps: np.ndarray, idx: np.ndarray, ds) -> np.ndarray:
    full = np.zeros((len(ds.y), maps.shape[-1]), np.float32)
    full[idx] = maps
    return full


@experiment_app.command("paper")
def experiment_paper(
    out: Path = typer.Option(Path("docs/results"), help="Where the JSON results and figures go."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    methods: str = typer.Option("classifier_only,cascaded,relu_max,l2", help="Comma-separated methods."),
    kernels: str = typer.Option("75,151,201,301", help="Comma-separated L2 kernels for the ablation ('' to skip)."),
    epochs: int = typer.Option(12, min=1),
    folds: int = typer.Option(5, min=2),
    seed: int = typer.Option(0),
) -> None:
    """The paper's protocol: 5-fold CV by segment and by record, four methods, kernel ablation, localisation."""
    from .paper import PaperExperimentConfig, run_paper_experiment
    from .train import TrainConfig

    cfg = PaperExperimentConfig(
        methods=tuple(m for m in methods.split(",") if m),
        kernels=tuple(int(k) for k in kernels.split(",") if k),
        folds=folds,
        seed=seed,
        train=TrainConfig(epochs=epochs, seed=seed, progress=sys.stderr.isatty()),
    )
    report = run_paper_experiment(cfg, out, data, _command())
    typer.echo(json.dumps({k: report[k] for k in ("segment_split", "record_split", "kernel_ablation")}, indent=2))


if __name__ == "__main__":  # pragma: no cover
    app()
