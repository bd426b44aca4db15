"""The `trainer` command line: build, train, evaluate and export the joint model."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import typer

from stream_ecg.rhythm import STREAM_CENTRES, STREAM_CONTEXT

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Train, evaluate and export stream-ecg models.")
experiment_app = typer.Typer(no_args_is_help=True, help="Reproducible experiments that write docs/results/*.json.")
app.add_typer(experiment_app, name="experiment")


def _command() -> str:
    """The command line as a shell would take it back (JSON options keep their quotes)."""
    return shlex.join(["trainer", *sys.argv[1:]])


@app.command()
def train(
    task: str = typer.Option("bedside", help="bedside (DS1 windows, the shipped model) | paper (PVC-vs-APB segments, one fold)"),
    out: Path = typer.Option(Path("runs/bedside"), help="Folder for checkpoint.pt and metrics.json."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory (default: STREAM_ECG_MITDB or ../shared/data/mitdb)."),
    epochs: int = typer.Option(24, min=1),
    lr: float = typer.Option(1e-3),
    sparsity: float = typer.Option(0.5, help="Weight of the scale-free attention sparsity prior (0 = the paper's loss)."),
    epoch_size: int = typer.Option(12000, help="bedside: windows drawn (balanced) per epoch."),
    method: str = typer.Option("l2", help="paper: classifier_only | cascaded | relu_max | l2"),
    kernel: int = typer.Option(151, help="Attention pooling kernel (odd, samples at 360 Hz)."),
    seed: int = typer.Option(0),
    seeds: str = typer.Option("", help="bedside: comma-separated seeds, one ensemble member each (default: --seed alone)."),
    test_fold: int = typer.Option(0, min=0, max=4, help="paper: which of the 5 stratified folds is held out."),
    model: str = typer.Option("{}", help='JSON overrides of the model config, e.g. \'{"cls_kernel": 9}\'.'),
    rhythm: bool = typer.Option(True, help="bedside: feed the RR-context channels (stream_ecg.rhythm) beside the ECG."),
    rhythm_context: int = typer.Option(0, min=0, help="bedside: RR relative to the median of the stream's last N RR "
                                       "intervals (per-stream state) instead of the window's median; 0 = the window's."),
    rhythm_both: bool = typer.Option(False, help="bedside, with --rhythm-context: keep the window-relative RR channels too."),
    beat_residual: bool = typer.Option(False, help="bedside: feed the first lead minus the window's median beat "
                                       "(stream_ecg.morphology) beside the ECG."),
    peak_detector: str = typer.Option("energy", help="bedside: the R-peak detector of the rhythm and residual channels "
                                      "and the interval rules (stream_ecg.rhythm.PEAK_DETECTORS: energy | energy_t)."),
    leads: str = typer.Option("MLII", help="bedside: comma-separated lead slots the model takes (trainer.bedside.LEAD_ALIASES), e.g. MLII,chest."),
    teacher: Path | None = typer.Option(None, help="bedside: a bedside checkpoint.pt (e.g. the shipped ensemble's run) whose outputs each member also learns."),
    distill: float = typer.Option(0.5, min=0.0, max=1.0, help="bedside: weight of the teacher's outputs in the loss."),
    select: str = typer.Option("best", help="best: keep the best validation epoch, stop early | last: train the whole schedule, keep the end."),
    val_every: int = typer.Option(1, min=1, help="with --select last: score the validation windows every N-th epoch "
                                  "and the last only (the same weights, less time)."),
    lead_dropout: float = typer.Option(0.0, min=0.0, max=1.0, help="bedside: share of training windows whose ECG leads "
                                       "are zeroed, the rhythm and residual channels kept (training only)."),
    folds: bool = typer.Option(False, help="bedside: cross-fit one member per DS1 record fold (trainer.bedside.FOLDS); "
                               "thresholds from the pooled out-of-fold scores of all DS1 records."),
    record_balance: float = typer.Option(0.0, min=0.0, max=1.0, help="bedside: within each class's third of an epoch, "
                                         "a record's share goes as its window count ** (1 - this); 0 = as drawn."),
    stretch: str = typer.Option("", help="bedside: comma-separated factors, e.g. 0.9,1.1: DS1 also replayed that many "
                                "times slower (time stretch), as extra training windows (never validation)."),
) -> None:
    """Train the joint model end-to-end with window/segment labels only; saves checkpoint.pt + metrics.json."""
    from .train import TrainConfig

    tcfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, sparsity=sparsity, patience=max(4, epochs // 3), progress=sys.stderr.isatty(),
                       select=select, val_every=val_every)
    if task == "bedside":
        from stream_ecg.dsp import DspConfig, DspError

        from .bedside import FOLDS, BedsideConfig, train_bedside

        try:  # DspConfig judges its own options (an unknown detector, rhythm_both without a context), before any data is read
            dsp = DspConfig(rhythm=rhythm, rhythm_context=rhythm_context, rhythm_both=rhythm_both,
                            beat_residual=beat_residual, peak_detector=peak_detector)
        except DspError as exc:
            raise typer.BadParameter(str(exc)) from exc
        cfg = BedsideConfig(dsp=dsp, model={**BEDSIDE_MODEL, "pool_kernel": kernel, **json.loads(model)},
                            folds=FOLDS if folds else (), leads=_lead_slots(leads), lead_dropout=lead_dropout,
                            record_balance=record_balance, stretch=tuple(float(v) for v in stretch.split(",") if v))
        report = train_bedside(cfg, tcfg, out, data, epoch_size=epoch_size, seeds=tuple(int(v) for v in seeds.split(",") if v),
                               teacher=teacher, distill=distill)
    elif task == "paper":
        report = _train_paper_fold(method, kernel, tcfg, out, data, seed, test_fold)
    else:
        raise typer.BadParameter(f"unknown task {task!r}: bedside or paper")
    report["command"] = _command()
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))


def _emit(report: dict, out: Path | None) -> None:
    """Print a report as JSON, and also write it to `out` when given."""
    text = json.dumps(report, indent=2, default=float)
    if out is not None:
        out.write_text(text + "\n")
    typer.echo(text)


def _checkpoints(runs: str) -> list[Path]:
    """`--runs A,B,C` -> each run folder's checkpoint.pt."""
    return [Path(r) / "checkpoint.pt" for r in runs.split(",") if r]


def _lead_slots(spec: str) -> tuple[str, ...]:
    from .bedside import LEAD_ALIASES

    slots = tuple(v.strip() for v in spec.split(",") if v.strip())
    unknown = [v for v in slots if v not in LEAD_ALIASES]
    if not slots or unknown or len(set(slots)) != len(slots):
        raise typer.BadParameter(f"--leads {spec!r}: give distinct slots out of {sorted(LEAD_ALIASES)}")
    return slots


# The shipped model's architecture: a small U-Net and classifier (see docs/results.md).
BEDSIDE_MODEL = dict(seg_widths=(4, 8, 16, 32), cls_widths=(8, 16, 32, 64), decimate=3)


def _train_paper_fold(method, kernel, tcfg, out, data, seed, test_fold) -> dict:
    from stream_ecg.intervals import IntervalRule
    from stream_ecg.scoring import binary_metrics

    from .datasets import paper_dataset
    from .model import JointModelConfig
    from .paper import PAPER_MODEL, _validation_split, localisation, segment_splits
    from .train import predict, save_checkpoint, train_model

    ds = paper_dataset(data)
    tr, te = segment_splits(ds, 5, seed)[test_fold]
    sub_tr, sub_va = _validation_split(ds.y[tr], None, seed)
    mcfg = JointModelConfig.for_method(method, **{**PAPER_MODEL, "pool_kernel": kernel})
    res = train_model(mcfg, tcfg, (ds.x[tr[sub_tr]], ds.y[tr[sub_tr]]), (ds.x[tr[sub_va]], ds.y[tr[sub_va]]), desc=method)
    probs, maps = predict(res.model, ds.x[te])
    loc, _ = localisation(ds, _scatter(maps, te, ds), IntervalRule(), te)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint.pt", res, mcfg, tcfg)
    return {"test": binary_metrics(ds.y[te], probs[:, 0], positive=0), "localisation": loc, "history": res.history,
            "best_epoch": res.best_epoch, "train_seconds": res.seconds}


def _scatter(maps: np.ndarray, idx: np.ndarray, ds) -> np.ndarray:
    full = np.zeros((len(ds.y), maps.shape[-1]), np.float32)
    full[idx] = maps
    return full


@app.command()
def export(
    run: Path = typer.Option(Path("runs/bedside"), help="Training run folder (checkpoint.pt, metrics.json)."),
    out: Path = typer.Option(..., help="Model folder to write (no default: a shipped model's folder must not be overwritten by accident)."),
    name: str = typer.Option(..., help="The model's name in its card, e.g. bedside-v9."),
    version: str = typer.Option(..., help="The model's version in its card, e.g. 9.0.0."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory for the DS2 evaluation."),
    evaluate: bool = typer.Option(True, help="Evaluate on DS2 and put the metrics in the card."),
    make_default: bool = typer.Option(True, help="Write edge_models/DEFAULT naming this model."),
    tensorrt: bool = typer.Option(False, help="Also compile with Torch-TensorRT (needs an NVIDIA GPU)."),
    fp16: bool = typer.Option(False, help="TensorRT: allow fp16 (attention pooling stays fp32)."),
    results: Path = typer.Option(Path("docs/results"), help="Where bedside_ds2.json goes (a candidate's evaluation need not overwrite the shipped one's)."),
    rule: str = typer.Option("{}", help='JSON overrides of the interval rule for the card (chosen with `trainer validate`), e.g. \'{"keep_drop": 0.5}\'.'),
) -> None:
    """Export ONNX + torch.export (+ Torch-TensorRT) with the model card; evaluate on DS2."""
    from .ship import ship

    card = ship(run, out, name, version, _command(), data, evaluate, json.loads(rule), results)
    if make_default and out.parent.name == "edge_models":
        (out.parent / "DEFAULT").write_text(out.name + "\n")
    typer.echo(json.dumps({k: card[k] for k in ("name", "files", "latency_ms", "metrics") if k in card}, indent=2, default=float))
    if tensorrt:
        _tensorrt(out, out / "model_trt.ep", fp16)


def _tensorrt(model_dir: Path, out: Path, fp16: bool) -> None:
    from .export import ExportError, compile_tensorrt

    try:
        path = compile_tensorrt(model_dir, out, fp16)
    except ExportError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(f"TensorRT module: {path}")


@app.command()
def tensorrt(
    model: Path = typer.Option(..., "--model", help="A shipped model folder (card.json, model.onnx, model.pt2)."),
    out: Path = typer.Option(Path("model_trt.ep"), help="The compiled module (an ExportedProgram; for this GPU only)."),
    fp16: bool = typer.Option(False, help="fp16 engine; the attention pooling stays fp32."),
) -> None:
    """Compile a shipped model with Torch-TensorRT on this machine's NVIDIA GPU (exit 2, naming the trtexec route, elsewhere)."""
    _tensorrt(model, out, fp16)


@app.command()
def recard(
    model: Path = typer.Option(..., "--model", help="A shipped model folder (card.json and its files)."),
    out: Path = typer.Option(..., help="Model folder to write."),
    name: str = typer.Option(...),
    version: str = typer.Option(...),
    rule: str = typer.Option("{}", help='JSON overrides of the interval rule (chosen with `trainer validate`), e.g. \'{"snap": 72}\'.'),
    data: Path | None = typer.Option(None, help="MIT-BIH directory for the DS2 evaluation."),
    evaluate: bool = typer.Option(True, help="Evaluate on DS2 and put the metrics in the card."),
    make_default: bool = typer.Option(False, help="Write edge_models/DEFAULT naming this model."),
    results: Path = typer.Option(Path("docs/results"), help="Where bedside_ds2.json goes."),
    thresholds: str = typer.Option("{}", help='JSON overrides of the class thresholds, e.g. \'{"V": 0.8}\'.'),
    reference: str | None = typer.Option(None, help="Prematurity reference for the fusion and interval_rule.premature: median, mean or stream (default: the card's)."),
    context: int = typer.Option(STREAM_CONTEXT, min=1, help="With --reference stream: samples of the stream's recent RRs whose centre is the reference."),
    centre: str = typer.Option("median", help="With --reference stream: median or mean of those RRs."),
    fusion: float | None = typer.Option(None, min=0.0, help="New rhythm-fusion weight on S (chosen with `trainer fuse`; default: the card's)."),
    class_rules_from: list[str] = typer.Option([], "--class-rules-from", help="CLASS=MODEL_DIR: label CLASS's intervals under that shipped model's interval rule and prematurity reference (same model files); repeatable."),
) -> None:
    """A shipped model with a new interval rule or thresholds: same model files, new card, re-measured latency and DS2 metrics."""
    from .ship import recard as recard_model

    card = recard_model(model, out, name, version, _command(), json.loads(rule), data, evaluate, results,
                        thresholds=json.loads(thresholds), reference=reference, context=context,
                        fusion=None if fusion is None else {"S": fusion}, centre=centre,
                        class_rules_from=_class_rules_from(class_rules_from))
    if make_default and out.parent.name == "edge_models":
        (out.parent / "DEFAULT").write_text(out.name + "\n")
    typer.echo(json.dumps({k: card[k] for k in ("name", "files", "interval_rule", "latency_ms", "metrics") if k in card},
                          indent=2, default=float))


def _class_rules_from(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise typer.BadParameter(f"{item!r}: expected CLASS=MODEL_DIR, e.g. V=edge_models/bedside-v9.7")
        out[label] = Path(path)
    return out


@app.command()
def reevaluate(
    model: Path = typer.Option(..., "--model", help="A shipped model folder (card.json and its files)."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory for the DS2 evaluation."),
    results: Path = typer.Option(Path("docs/results"), help="Where bedside_ds2.json goes."),
) -> None:
    """A shipped model's DS2 evaluation again with the current scoring: new card metrics and README, same model files."""
    from .ship import reevaluate as reevaluate_model

    card = reevaluate_model(model, _command(), data, results)
    typer.echo(json.dumps(card["metrics"], indent=2, default=float))


@app.command()
def validate(
    run: Path = typer.Option(Path("runs/bedside"), help="The training run (checkpoint.pt) whose held-out records to score."),
    model_dir: Path | None = typer.Option(None, "--model", help="Take thresholds and interval rule from this exported card (default: the run's)."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    rules: str = typer.Option("[{}]", help='JSON list of interval-rule overrides to compare, e.g. \'[{}, {"keep_drop": 0.5}]\'.'),
    thresholds: str = typer.Option("{}", help='JSON overrides of the card\'s class thresholds, e.g. \'{"S": 0.3}\', or a list of them to compare (each with every rule).'),
) -> None:
    """Beat- and window-level scores on the run's held-out DS1 records (out-of-fold for a cross-fitted
    run): model and rule choice without touching DS2."""
    import dataclasses

    from stream_ecg.card import load_card
    from stream_ecg.evaluation import score_records

    from .bedside import BedsideConfig
    from .train import load_checkpoint
    from .validation import held_out_outputs

    ckpt = load_checkpoint(run / "checkpoint.pt")[1]
    margin = BedsideConfig.from_dict(ckpt["bedside"]["bedside_config"]).margin  # the run's, as its targets were cut
    card = load_card(model_dir) if model_dir is not None else _run_card(ckpt)
    grid = json.loads(thresholds)
    rows, names, cache = [], [], {}
    for override in grid if isinstance(grid, list) else [grid]:
        at = dataclasses.replace(card, thresholds={**card.thresholds, **override})
        for rule_override in json.loads(rules):
            scored = dataclasses.replace(at, interval_rule=dataclasses.replace(at.interval_rule, **rule_override))
            outputs = held_out_outputs(run, scored, data, cache)
            names = [o.name for o in outputs]
            ev = score_records(outputs, scored, margin)
            rows.append({"thresholds": scored.thresholds, "interval_rule": scored.interval_rule.to_dict(), "beat": ev["beat"],
                         "window": ev["window"], "window_located": ev["window_located"],
                         "detection_delay_s": ev["detection_delay_s"],
                         "first_window": ev["first_window"], "unconfirmed": ev["unconfirmed"],
                         "records_unconfirmed": {r["record"]: {c: r[c]["unconfirmed"] for c in scored.abnormal}
                                                 for r in ev["records"]},
                         "records_beat": {r["record"]: {c: {k: r[c][k] for k in ("se", "ppv", "beats", "intervals")}
                                                        for c in scored.abnormal} for r in ev["records"]}})
    typer.echo(json.dumps({"records": names, "thresholds": card.thresholds, "by_rule": rows}, indent=2, default=float))


@app.command()
def prematurity(
    records: str = typer.Option("DS1,DS2", help="DS1, DS2 and/or comma-separated record names."),
    window: int = typer.Option(2000, help="Samples around each beat whose RR intervals set its reference (the model window)."),
    premature: float = typer.Option(0.1, help="How much shorter than the reference an S beat's RR must be to count as early."),
    reference: str = typer.Option("median", help="What the RR is early against: the median or the mean of the RR intervals around the beat."),
    context: int = typer.Option(0, min=0, help="> 0: against the RRs of this many samples before the beat instead (a stream's recent rhythm, causal)."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """From the annotations alone: the share of S (and N) beats that come early against the RR around them, per record."""
    from .prematurity import prematurity_report

    report = prematurity_report(records, window, premature, data, reference, context)
    report["command"] = _command()
    _emit(report, out)


@app.command()
def irregularity(
    records: str = typer.Option("DS1", help="DS1, DS2 and/or comma-separated record names."),
    thresholds: str = typer.Option("0.05,0.08,0.12", help="Comma-separated interval_rule.regular values."),
    context: int = typer.Option(0, help="> 0: read the RRs of this many samples ending with each window (a stream's recent rhythm)."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """From the annotations alone: how often interval_rule.regular's irregularity would drop a window's S intervals, in
    atrial fibrillation, in other windows with S beats, and in the rest."""
    from .prematurity import irregularity_report

    report = irregularity_report(records, tuple(float(t) for t in thresholds.split(",") if t), context=context, data_dir=data)
    report["command"] = _command()
    _emit(report, out)


@app.command("by-record")
def by_record(
    files: str = typer.Option(..., help="Comma-separated `trainer validate` outputs (one per seed set)."),
    base: int = typer.Option(..., help="Index of the base row in each file's by_rule list."),
    new: int = typer.Option(..., help="Index of the changed row."),
    new_files: str = typer.Option("", help="Comma-separated outputs, one per --files entry, to take the changed row "
                                  "from (a retrained run against its sibling); default: the --files themselves."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Per class, how many records' beat F1 a change raised or lowered, per file and summed: broad gain or a few records?"""
    from .validation import record_changes

    bases, news = files.split(","), new_files.split(",") if new_files else files.split(",")
    if len(news) != len(bases):
        raise typer.BadParameter(f"--new-files names {len(news)} files for {len(bases)} --files", param_hint="--new-files")
    per_file = {}
    for f, g in zip(bases, news):
        rows, changed = json.loads(Path(f).read_text())["by_rule"], json.loads(Path(g).read_text())["by_rule"]
        for name, file, have, want in (("--base", f, rows, base), ("--new", g, changed, new)):
            if not 0 <= want < len(have):
                raise typer.BadParameter(f"{file} has {len(have)} rows; row {want} does not exist", param_hint=name)
        per_file[f if f == g else f"{f} -> {g}"] = record_changes(rows[base], changed[new])
    total = {c: {k: sum(v[c][k] for v in per_file.values()) for k in ("up", "down", "same")} for c in ("S", "V")}
    _emit({"files": per_file, "total": total, "command": _command()}, out)


@app.command()
def summary(
    files: str = typer.Option(..., help="Comma-separated `trainer validate` outputs."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Each row's pooled beat Se / +P / F1 per class and mean beat F1 (S, V): the figure the DS1 rules compare."""
    from .validation import beat_summary

    rows = {f: [beat_summary(r) for r in json.loads(Path(f).read_text())["by_rule"]] for f in files.split(",") if f}
    _emit({"files": rows, "command": _command()}, out)


@app.command("member-check")
def member_check(
    run: Path = typer.Option(..., help="A cross-fitted bedside run (trainer train --folds)."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    rule: str = typer.Option("{}", help="JSON overrides of the run's interval rule."),
    thresholds: str = typer.Option("{}", help="JSON overrides of the run's class thresholds."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Each member alone on the DS1 records it trained on: beat Se / +P per class (does its attention light the
    ectopic beats?), leaving its held-out fold unspent."""
    from stream_ecg.evaluation import score_records

    from .bedside import BedsideConfig
    from .train import load_checkpoint
    from .validation import _record_f1, member_training_outputs

    ckpt = load_checkpoint(run / "checkpoint.pt")[1]
    cfg = BedsideConfig.from_dict(ckpt["bedside"]["bedside_config"])
    card = _run_card(ckpt, thresholds, rule)
    try:
        members = member_training_outputs(run, card, data)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--run") from None
    seeds = _member_seeds(run, len(members))
    rows = []
    for k, outputs in members:
        ev = score_records(outputs, card, cfg.margin)
        rows.append({"member": k, "seed": seeds[k] if seeds else None, "records": [o.name for o in outputs],
                     "beat": {c: {**ev["beat"][c], "f1": _record_f1(ev["beat"][c])} for c in card.abnormal}})
    from stream_ecg.card import sha256

    _emit({"run": str(run), "checkpoint_sha256": sha256(run / "checkpoint.pt"), "thresholds": card.thresholds,
           "interval_rule": card.interval_rule.to_dict(), "members": rows, "command": _command()}, out)


@app.command()
def guard(
    run: Path = typer.Option(..., help="A cross-fitted bedside run (trainer train --folds, fused or not)."),
    out: Path = typer.Option(..., help="Folder for the guarded run (checkpoint.pt, metrics.json)."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    rule: str = typer.Option("{}", help="JSON overrides of the run's interval rule for the check."),
    thresholds: str = typer.Option("{}", help="JSON overrides of the run's class thresholds for the check."),
    cls: str = typer.Option("V", help="The class whose beat F1 on a member's training records decides."),
    min_f1: float = typer.Option(0.6, help="Members below this are retrained."),
    seed_step: int = typer.Option(100, help="Retries use seed + step, + 2 step, ..."),
    tries: int = typer.Option(3, min=1, help="Retrainings per failing member at most; the best on its training records is kept."),
    scores: Path | None = typer.Option(None, help="A saved `trainer member-check` of this run under the same thresholds and "
                                        "rule, instead of checking its members again."),
) -> None:
    """Retrain, with the next seeds, each member whose beat F1 on its own training records is below --min-f1 (its
    attention lights the wrong beats); keep the others bit for bit and choose the thresholds again out of fold."""
    from .bedside import BedsideConfig
    from .guard import GuardConfig, guard_run, scores_from_file
    from .train import load_checkpoint

    ckpt = load_checkpoint(run / "checkpoint.pt")[1]
    if not BedsideConfig.from_dict(ckpt["bedside"]["bedside_config"]).folds:  # before its card is built from the run
        raise typer.BadParameter(f"{run} is not a cross-fitted run (trainer train --folds)", param_hint="--run")
    card = _run_card(ckpt, thresholds, rule)
    try:
        cfg = GuardConfig(cls=cls, min_f1=min_f1, seed_step=seed_step, tries=tries)
        known = scores_from_file(scores, run, card, cls) if scores is not None else None
        report = guard_run(run, out, card, cfg, data, known, _command())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _emit(report, None)


def _run_card(ckpt: dict, thresholds: str = "{}", rule: str = "{}"):
    """A training run's own card (thresholds, rules, DSP), as `trainer export` would write it, without files; with the
    JSON `thresholds` and interval `rule` overrides of a command's options."""
    import dataclasses

    from stream_ecg.card import ModelCard

    from .ship import card_from_run

    card = ModelCard.from_dict({**card_from_run(ckpt, "run", "0", ""), "files": {}})
    return dataclasses.replace(card, thresholds={**card.thresholds, **json.loads(thresholds)},
                               interval_rule=dataclasses.replace(card.interval_rule, **json.loads(rule)))


def _member_seeds(run: Path, n: int) -> list | None:
    """The seeds of a run's n fold networks from its metrics.json, or None where they do not map one to one (a combined
    run averages several seeds per fold)."""
    metrics = run / "metrics.json"
    seeds = json.loads(metrics.read_text()).get("seeds") if metrics.exists() else None
    return seeds if seeds and len(seeds) == n else None


@app.command("by-fold")
def by_fold(
    file: Path = typer.Option(..., help="A `trainer validate` output of a cross-fitted run."),
    row: int = typer.Option(0, help="Index of the row in its by_rule list."),
    run: Path = typer.Option(..., help="The run it scored (its metrics.json names the folds and seeds)."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Beat Se / +P of each member on the records it held out: does one member's localisation fail?"""
    from .validation import fold_scores

    metrics = json.loads((run / "metrics.json").read_text())
    folds = metrics.get("bedside_config", {}).get("folds")
    if not folds:
        raise typer.BadParameter(f"{run} is not a cross-fitted run (no folds in metrics.json)", param_hint="--run")
    rows = json.loads(file.read_text())["by_rule"]
    if not 0 <= row < len(rows):
        raise typer.BadParameter(f"{file} has {len(rows)} rows", param_hint="--row")
    try:
        scores = fold_scores(rows[row], folds, _member_seeds(run, len(folds)))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--file") from None
    _emit({"file": str(file), "row": row, "run": str(run), "folds": scores, "command": _command()}, out)


@app.command()
def members(
    run: Path = typer.Option(Path("runs/bedside"), help="A bedside training run (checkpoint.pt) holding an ensemble."),
    records: str = typer.Option("DS2", help="DS2, VAL (the run's validation records; for a cross-fitted run each member on its own fold, per record) or comma-separated record names."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Window-level AUC of each ensemble member alone and of the ensemble: how far single seeds disagree."""
    from .bedside import member_spread

    report = member_spread(run / "checkpoint.pt", records, data)
    report["command"] = _command()
    metrics = run / "metrics.json"  # the run's own training command, so the table can say how it was trained
    if metrics.exists():
        report["trained_by"] = json.loads(metrics.read_text()).get("command")
    _emit(report, out)


@app.command("ensemble-size")
def ensemble_size_cmd(
    runs: str = typer.Option(..., help="Comma-separated cross-fitted runs (trainer train --folds) with the same record folds."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Out-of-fold window AUC of averaging 1..n cross-fitted runs: does a bigger ensemble still gain?"""
    from .bedside import ensemble_size

    report = ensemble_size(_checkpoints(runs), data)
    report["command"] = _command()
    _emit(report, out)


@app.command("threshold-transfer")
def threshold_transfer_cmd(
    runs: str = typer.Option(..., help="Comma-separated cross-fitted runs (trainer train --folds) with the same record folds."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Do window thresholds chosen on some DS1 patients hold on the others? Out-of-fold, DS1 only."""
    from .bedside import threshold_transfer

    report = threshold_transfer(_checkpoints(runs), data)
    report["command"] = _command()
    _emit(report, out)


@app.command("fusion-gain")
def fusion_gain_cmd(
    runs: str = typer.Option(..., help="Comma-separated cross-fitted runs (trainer train --folds) with the same record folds."),
    weights: str = typer.Option("2,5,10,20,40", help="Comma-separated weights of rr prematurity on the S logit."),
    group: str = typer.Option("", help="Comma-separated DS1 records whose windows are also scored alone; "
                              "empty: the irregular rhythms, trainer.bedside.IRREGULAR_DS1."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    out: Path | None = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Out-of-fold S window AUC with the rhythm fusion (stream_ecg.fusion) at each weight. DS1 only."""
    from .bedside import IRREGULAR_DS1, fusion_gain

    report = fusion_gain(_checkpoints(runs), tuple(float(w) for w in weights.split(",") if w), data,
                         tuple(r for r in group.split(",") if r) or IRREGULAR_DS1)
    report["command"] = _command()
    _emit(report, out)


@app.command()
def fuse(
    run: Path = typer.Option(..., help="A cross-fitted run (trainer train --folds): its out-of-fold scores set the thresholds."),
    weight: float = typer.Option(..., min=0.0, help="Weight of rr prematurity on the S logit (chosen with `trainer fusion-gain`)."),
    out: Path = typer.Option(..., help="Folder for the fused run (checkpoint.pt, metrics.json), ready for `trainer export`."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    reference: str = typer.Option("median", help="What prematurity is taken against: the window's median RR (the rr_prev channel's own), its mean RR, or stream: the --centre of the stream's recent RRs."),
    context: int = typer.Option(STREAM_CONTEXT, min=1, help="With --reference stream: samples of the stream's recent RRs (5 min at 360 Hz)."),
    centre: str = typer.Option("median", help="With --reference stream: median or mean of those RRs."),
) -> None:
    """Give a run the rhythm fusion on S and choose its thresholds again, out-of-fold on DS1."""
    from .bedside import fuse_run

    if centre not in STREAM_CENTRES:
        raise typer.BadParameter(f"must be one of {STREAM_CENTRES}", param_hint="--centre")
    _emit(fuse_run(run, weight, out, _command(), data, reference, context, centre), None)


@app.command()
def unpack(
    model: Path = typer.Option(..., "--model", help="A shipped cross-fitted model folder (card.json, model.pt2)."),
    out: Path = typer.Option(..., help="Folder for the run (checkpoint.pt), for `trainer validate` and `trainer fuse`."),
) -> None:
    """A training run rebuilt from a shipped model: score the shipped networks out of fold on DS1 without retraining."""
    from .ship import unpack as unpack_model

    _emit(unpack_model(model, out, _command()), None)


@app.command()
def combine(
    runs: str = typer.Option(..., help="Comma-separated cross-fitted runs (trainer train --folds) of one recipe on other seed sets, "
                      "none fused or all fused alike."),
    out: Path = typer.Option(..., help="Folder for the combined run (checkpoint.pt, metrics.json): fused as its runs are, "
                             "else ready for `trainer fuse`."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
) -> None:
    """Average the members of several seed sets into one cross-fitted run; thresholds out-of-fold on DS1."""
    from .bedside import combine_runs

    _emit(combine_runs([Path(r) for r in runs.split(",") if r], out, _command(), data), None)


@experiment_app.command("paper")
def experiment_paper(
    out: Path = typer.Option(Path("docs/results"), help="Where the JSON results and figures go."),
    data: Path | None = typer.Option(None, help="MIT-BIH directory."),
    methods: str = typer.Option("classifier_only,cascaded,relu_max,l2,l2_sparse", help="Comma-separated methods."),
    kernels: str = typer.Option("75,151,201,301", help="Comma-separated L2 kernels for the ablation ('' to skip)."),
    epochs: int = typer.Option(12, min=1),
    folds: int = typer.Option(5, min=2),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, min=1, help="torch CPU threads."),
) -> None:
    """The paper's protocol: 5-fold CV by segment and by record, four methods, kernel ablation, localisation."""
    from .paper import PaperExperimentConfig, run_paper_experiment
    from .train import TrainConfig

    cfg = PaperExperimentConfig(
        methods=tuple(m for m in methods.split(",") if m),
        kernels=tuple(int(k) for k in kernels.split(",") if k),
        folds=folds,
        seed=seed,
        train=TrainConfig(epochs=epochs, seed=seed, threads=threads, progress=sys.stderr.isatty()),
    )
    report = run_paper_experiment(cfg, out, data, _command())
    typer.echo(json.dumps({k: report[k] for k in ("segment_split", "record_split", "kernel_ablation")}, indent=2))


@app.command()
def report(results: Path = typer.Option(Path("docs/results"), help="Folder with the JSON results.")) -> None:
    """Regenerate docs/results.md from the committed JSON results."""
    from .report import render

    out = results.parent / "results.md"
    out.write_text(render(results))
    typer.echo(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    app()
