"""Render docs/results.md from the committed JSON results, so every number has its source and command."""

from __future__ import annotations

import json
from pathlib import Path

PAPER = {
    "l2": {"accuracy": 0.9877, "sensitivity": 0.934, "specificity": 0.996, "auc": 0.993},
    "classifier_only": {"accuracy": 0.9810, "sensitivity": 0.949, "specificity": 0.990, "auc": 0.988},
}
PAPER_GRADE = {"I": 0.50, "II": 0.27, "III": 0.23}
DE_CHAZAL = {"V": {"se": 0.777, "ppv": 0.819}, "S": {"se": 0.759, "ppv": 0.385}}
METRICS = ("accuracy", "sensitivity", "specificity", "auc")
NAMES = {
    "classifier_only": "classifier only",
    "cascaded": "cascaded (no attention)",
    "relu_max": "ReLU + max pooling",
    "l2": "L2 pooling",
    "l2_sparse": "L2 pooling + sparsity prior (ours)",
}


def _ms(d: dict) -> str:
    return f"{d['mean']:.4f} ± {d['std']:.4f}"


def _pct(v) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f} %"


def _load(res: Path, name: str) -> dict | None:
    """A results JSON, or None where its command has not been run yet (its section is then left out)."""
    path = res / name
    return json.loads(path.read_text()) if path.exists() else None


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table: header, rule, one line per row."""
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def paper_section(res: Path) -> list[str]:
    d = _load(res, "paper_protocol.json")
    if d is None:
        return ["_paper_protocol.json not produced yet._", ""]
    cfg = d["config"]
    out = [
        "## The paper's protocol (MIT-BIH PVC vs APB segments, 5-fold CV)",
        "",
        f"Command: `{d['command']}` — {d['wall_seconds'] / 60:.0f} min on 2 CPU cores for everything below. "
        f"Source: `docs/results/paper_protocol.json`.",
        "",
        f"Segments: {cfg['segments']['PVC']} PVC, {cfg['segments']['APB']} APB (paper: 2627, 356; see docs/data.md). "
        f"Sensitivity and specificity are with respect to PVC; AUC is the mean of the per-class AUCs.",
        f"Model (all methods): U-Net widths {cfg['model']['seg_widths']}, classifier widths {cfg['model']['cls_widths']}, "
        f"internal rate 1/{cfg['model']['decimate']}, kernel {cfg['model']['pool_kernel']}; "
        f"Adam lr {cfg['train']['lr']} (cosine), {cfg['train']['epochs']} epochs max, early stopping on a held-out sixth "
        f"of each training fold (patience {cfg['train']['patience']}), batch {cfg['train']['batch_size']}.",
        "",
    ]
    for split, title in (("segment_split", "Folds split by segment (the paper's protocol)"),
                         ("record_split", "Folds split by record (no patient in train and test)")):
        rows = []
        for m, r in d[split].items():
            rows.append([NAMES.get(m, m), *(_ms(r[k]) for k in METRICS)])
            if split == "segment_split" and m in PAPER:
                rows.append([f"_paper: {NAMES[m]}_", *(f"{PAPER[m][k]:.4f}" for k in METRICS)])
        out += [f"### {title}", "", *_table(["method", "accuracy", "sensitivity", "specificity", "AUC"], rows), ""]
    out += ["### L2 pooling kernel ablation (segment split)", "",
            *_table(["kernel (samples)", "accuracy", "sensitivity", "specificity", "AUC"],
                    [[k, *(_ms(r[m]) for m in METRICS)] for k, r in d["kernel_ablation"].items()]), ""]
    return out


def localisation_section(res: Path) -> list[str]:
    d = _load(res, "localisation.json")
    if d is None:
        return []
    out = [
        "## Localisation, measured against the beat annotations",
        "",
        f"Command: `{d['command']}` (same run). Source: `docs/results/localisation.json`. Rule "
        f"(`stream_ecg/intervals.py`, shared with the runtime): A / max A per window, threshold "
        f"{d['rule']['threshold']}, gaps ≤ {d['rule']['merge_gap']} samples merged, runs < {d['rule']['min_len']} samples dropped. "
        "Grade I: every abnormal R peak inside an interval and no normal one; II: every abnormal inside, some normal "
        "inside; III: an abnormal beat missed. The paper's grades are a human's, by eye.",
        "",
    ]
    rows = [[NAMES.get(m, m), *(_pct(r["grade"][g]) for g in ("I", "II", "III")), _pct(r["abnormal_hit_rate"]),
             _pct(r["normal_suppression_rate"]), r["windows"]] for m, r in d["by_method"].items()]
    rows.append(["_paper (L2, graded by eye)_", *(_pct(PAPER_GRADE[g]) for g in ("I", "II", "III")), "", "", ""])
    out += [*_table(["method", "grade I", "grade II", "grade III", "abnormal-beat hit rate", "normal-beat suppression", "windows"], rows), ""]
    figs = sorted((res / "figures" / d.get("method", "")).glob("*.png")) or sorted((res / "figures").glob("*/*.png"))
    if figs:
        out += [f"Overlays for `{d.get('method', '')}` (ECG, attention heat map in red, intervals as blue bars, annotated R peaks "
                "dashed; every method's in `docs/results/figures/`):", ""]
        out += [f"![{f.stem}](results/{f.relative_to(res).as_posix()})" for f in figs[:12]]
        out.append("")
    return out


def _default_source(res: Path) -> str:
    """Where the default model's (edge_models/DEFAULT) DS2 evaluation lies: its own results folder when it has one
    (`trainer export/recard --results docs/results/<name>`), else the top-level file."""
    from stream_ecg.card import default_model_dir

    try:
        name = default_model_dir().name
    except Exception:  # no edge_models/ beside this checkout: fall back to the top-level file
        return "bedside_ds2.json"
    return f"{name}/bedside_ds2.json" if (res / name / "bedside_ds2.json").exists() else "bedside_ds2.json"


def bedside_section(res: Path) -> list[str]:
    source = _default_source(res)
    d = _load(res, source)
    if d is None:
        return []
    w, f5 = d["whole_record"], d["from_5_min"]
    out = [
        "## The shipped model (edge_models/DEFAULT) on DS2 (inter-patient, offline through the runtime's code path)",
        "",
        f"Command: `{d['command']}` (model `{d['model']}`; evaluation {d['seconds']:.0f} s). "
        f"Source: `docs/results/{source}`. Beat level: an annotated beat counts as found when a published "
        "interval of its class lies within 150 ms of its R peak; +P is the share of published intervals holding a beat "
        "of their class; +P (EC57) leaves out what EC57 (WFDB's bxb) and de Chazal 2004 do not count, V intervals that "
        "lit only fusion (F) or unclassifiable (Q) beats and S intervals that lit only Q beats (n/a: scored before "
        "the measure existed). Window level: windows whose only beat of a class sits in the 0.2 s edge margin are left out.",
        "",
    ]
    rows = []
    for c in ("V", "S"):
        b, b5, win = w["beat"][c], f5["beat"][c], w["window"][c]
        rows.append([c, _pct(b["se"]), _pct(b["ppv"]), _pct(b.get("ppv_ec57")), _pct(b5["se"]), _pct(b5["ppv"]),
                     _pct(b5.get("ppv_ec57")), _pct(win["se"]), _pct(win["precision"]),
                     f"{win['auc']:.3f}", f"{_pct(DE_CHAZAL[c]['se'])} / {_pct(DE_CHAZAL[c]['ppv'])}"])
    out += [*_table(["class", "beat Se", "beat +P", "beat +P (EC57)", "beat Se (from 5 min)", "beat +P (from 5 min)",
                     "beat +P (EC57, from 5 min)", "window Se", "window precision",
                     "window AUC", "de Chazal 2004 Se / +P"], rows), ""]
    others = [(f"{e['model']} (top level)", e) for e in [_load(res, "bedside_ds2.json")] if e and source != "bedside_ds2.json"]
    earlier = others + [(p.parent.name, e) for p in sorted(res.glob("*/bedside_ds2.json"))
                        if (e := _load(p.parent, p.name)) and e["command"] != d["command"]]
    if earlier:
        out += ["Earlier shipped models and candidates on the same DS2 evaluation (whole record; sources "
                "`docs/results/<folder>/bedside_ds2.json`):", "",
                *_table(["folder", "command", *(f"{c} {m}" for c in ("V", "S") for m in ("beat Se", "beat +P", "window AUC"))],
                        [[f"`{folder}`", f"`{e['command']}`",
                          *(v for c in ("V", "S") for v in (_pct(e["whole_record"]["beat"][c]["se"]), _pct(e["whole_record"]["beat"][c]["ppv"]),
                                                            f"{e['whole_record']['window'][c]['auc']:.3f}"))] for folder, e in earlier]), ""]
    return out


def members_section(res: Path) -> list[str]:
    d = _load(res, "members_ds2.json")
    if d is None:
        return []
    out = [
        "### One seed or several: window AUC of each ensemble member alone on DS2",
        "",
        f"Command: `{d['command']}`. Source: `docs/results/members_ds2.json` ({d['windows']} DS2 windows)"
        + (f"; with the run's rhythm fusion {d['rhythm_fusion']} on every row." if d.get("rhythm_fusion") else "."),
        "",
        *_table(["model", "window AUC S", "window AUC V"],
                [*([f"seed {m['seed']} alone", f"{m['window_auc']['S']:.3f}", f"{m['window_auc']['V']:.3f}"] for m in d["members"]),
                 ["ensemble (mean of logits)", f"{d['ensemble']['window_auc']['S']:.3f}", f"{d['ensemble']['window_auc']['V']:.3f}"]]),
        "",
    ]
    return out


def crossfit_section(res: Path) -> list[str]:
    d = _load(res, "crossfit_oof.json")
    if d is None:
        return []
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    out = [
        "### Cross-fitted members on the DS1 records they never saw (explored, not shipped)",
        "",
        f"Command: `{d['command']}`. Source: `docs/results/crossfit_oof.json`. Window AUC and mean logit per record, "
        "from the one member trained without the record's fold; – where the record has no windows of the class.",
        "",
        *_table(["member", "record", "S windows", "S AUC", "S mean logit", "V windows", "V AUC", "V mean logit"],
                [[r["member"], r["record"], *(v for c in ("S", "V") for v in (r[c]["positives"], fmt(r[c]["auc"]), f"{r[c]['mean_logit']:+.1f}"))]
                 for r in d["out_of_fold"]]),
        "",
    ]
    if "pooled" in d:
        pooled = d["pooled"]
        out += [f"Pooled over all {len(d['out_of_fold'])} records: window AUC S {pooled['S']['auc']:.3f}, V {pooled['V']['auc']:.3f}; "
                f"with each record's logits centred on their causal running median over {d['centre_windows']} windows "
                f"(a per-patient offset removed): S {pooled['S']['auc_centred']:.3f}, V {pooled['V']['auc_centred']:.3f}"
                + (f"; a learning-free score, the window's shortest RR over the stream's recent median RR (`trainer.bedside.stream_prematurity`): "
                   f"S {pooled['S']['auc_rr_prematurity']:.3f}" if "auc_rr_prematurity" in pooled["S"] else "") + ".", ""]
    runs = [(f.name, _load(res, f.name)) for f in sorted(res.glob("crossfit_oof*.json"))]
    runs = [(name, r) for name, r in runs if r and "pooled" in r]
    if len(runs) > 1:
        out += ["Cross-fitted runs compared (pooled out-of-fold window AUC over all DS1 records; one run per row, "
                "trained by the first command, scored by the second; see `docs/results_notes.md`):", "",
                *_table(["source", "trained by", "scored by", "S AUC", "V AUC"],
                        [[f"`{name}`", f"`{r.get('trained_by', '?')}`", f"`{r['command']}`", f"{r['pooled']['S']['auc']:.3f}",
                          f"{r['pooled']['V']['auc']:.3f}"] for name, r in runs]), ""]
    return out


def live_section(res: Path) -> list[str]:
    d = _load(res, "live_ds2.json")
    if d is None:
        return []
    out = [
        "## The same model on DS2 through the live engine (ZeroMQ in, worker, ZeroMQ out)",
        "",
        f"Command: `{d['command']}` (model `{d['model']['name']}` {d['model']['version']}; "
        f"{d['realtime_factor']:.0f}x real time). Source: `docs/results/live_ds2.json`; details in `docs/live_evaluation.md`.",
        "",
        *_table(["class", "beat Se", "beat +P", "window Se", "window precision", "window AUC"],
                [[c, _pct(d["beat"][c]["se"]), _pct(d["beat"][c]["ppv"]), _pct(d["window"][c]["se"]), _pct(d["window"][c]["precision"]),
                  f"{d['window'][c]['auc']:.3f}"] for c in ("V", "S")]),
        "",
    ]
    return out


def render(res: Path = Path("docs/results"), intro: str = "") -> str:
    lines = ["# Results", "", "Generated by `trainer report` from the JSON files in `docs/results/`; each section names "
             "the command that produced its numbers. Re-run that command, then `trainer report`.", ""]
    if intro:
        lines += [intro, ""]
    for section in (paper_section, localisation_section, bedside_section, members_section, crossfit_section, live_section):
        lines += section(res)
    notes = res.parent / "results_notes.md"
    if notes.exists():
        lines += [notes.read_text()]
    return "\n".join(lines) + "\n"
