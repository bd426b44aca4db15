"""The report of `stream-ecg evaluate`: one self-contained HTML file, plots embedded as base64 PNGs.

Every section is always there; where a class has no annotated beats it says "no beats" instead of
leaving a plot out, so two reports can be compared section by section.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from .intervals import inside_any
from .live_eval import ABNORMAL, EvaluateError, LiveRecord, LiveRun

__all__ = ["SECTIONS", "write_report"]

SECTIONS = (
    ("summary", "Summary"),
    ("per-record", "Beat level per record: sensitivity and positive predictivity"),
    ("latency", "Alarm latency"),
    ("confusion", "Window level: confusion matrices"),
    ("grade", "Localisation grade on abnormal windows"),
    ("strips", "ECG strips: best and worst records"),
    ("records", "Per record"),
    ("provenance", "How this report was produced"),
)
COLOURS = {"V": "#d62728", "S": "#ff7f0e", "N": "#7f7f7f", "F": "#9467bd", "Q": "#1f77b4"}
STRIP_S = 10.0


def write_report(summary: dict, run: LiveRun, out_dir: Path | str) -> Path:
    """Write `report.html` into out_dir and return its path."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise EvaluateError("the HTML report needs matplotlib: pip install matplotlib (or stream-ecg[trainer])") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = {
        "summary": _summary(summary),
        "per-record": _per_record(Figure, summary),
        "latency": _latency(Figure, summary, run),
        "confusion": _confusion(Figure, summary),
        "grade": _grade(summary),
        "strips": _strips(Figure, summary, run),
        "records": _records_table(summary),
        "provenance": _provenance(summary),
    }
    model = summary.get("model", {})
    title = f"stream-ecg evaluate — {model.get('name', '?')} {model.get('version', '')}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}img{max-width:100%}.note{color:#555}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        "<p class='note'>Research software, not a medical device. Scores from the live path "
        "(replay &rarr; serve &rarr; published results) against the reference annotations.</p>",
    ]
    for key, heading in SECTIONS:
        parts.append(f"<section id='{key}'><h2>{_e(heading)}</h2>{body[key]}</section>")
    parts.append("</body></html>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# --- sections ---------------------------------------------------------------------------------


def _summary(s: dict) -> str:
    rows = []
    for c in ABNORMAL:
        b, f5, wf = s["beat"][c], s["from_5_min"]["beat"][c], s["wfdb_compare"][c]
        avg = s["beat_record_average"].get(c, {})
        rows.append([f"{c} beats (whole record)", _beats(b), _pct(b["se"], b["beats"]), _pct(b["ppv"], b["beats"] or b["intervals"])])
        rows.append([f"{c} beats (from {s['from_5_min']['skip_s']:g} s)", _beats(f5), _pct(f5["se"], f5["beats"]), _pct(f5["ppv"], f5["beats"] or f5["intervals"])])
        rows.append([f"{c} per-record average", "", _pct(avg.get("se"), b["beats"]), _pct(avg.get("ppv"), b["beats"] or b["intervals"])])
        rows.append([f"{c} bxb-style (interval centres)", _beats(wf), _pct(wf["se"], wf["beats"]), _pct(wf["ppv"], wf["beats"] or wf["annotations"])])
    beat = _table(["", "beats", "Se", "+P"], rows)
    win_rows = []
    for c, m in s["window"].items():
        win_rows.append([c, str(m["n"]), _pct(m["se"], m["tp"] + m["fn"]), _pct(m["precision"], m["tp"] + m["fn"]), _num(m["auc"])])
    window = _table(["class", "windows", "Se", "precision", "AUC"], win_rows)
    lat, delay, proc = s["alarm_latency_s"], s["alarm_stream_delay_s"], s["processing_latency_s"]
    live_rows = [
        ["alarm latency (s): chunk sent &rarr; interval published", _num(lat["p50"]), _num(lat["p95"]), _num(lat["max"]), str(lat["n"])],
        ["stream delay (s): beat &rarr; end of the chunk completing the window", _num(delay["p50"]), _num(delay["p95"]), _num(delay["max"]), str(delay["n"])],
        ["processing (s): chunk received &rarr; result published", _num(proc["p50"]), _num(proc["p95"]), _num(proc["max"]), str(proc["n"])],
    ]
    live = _table(["", "p50", "p95", "max", "n"], live_rows)
    d = s["drops"]
    health = (
        f"<p>Throughput: {_num(s['stream_seconds'], 0)} s of ECG in {_num(s['wall_seconds'], 1)} s = "
        f"<b>{_num(s['realtime_factor'], 0)} &times; real time</b>. Windows published: "
        f"{d['windows_expected'] - d['windows_missing']} of {d['windows_expected']}"
    )
    if d["windows_missing"] or d["worker"].get("queue_full") or d["refused"]:
        health += (f" &mdash; <b style='color:#d62728'>{d['windows_missing']} missing</b>, worker drops "
                   f"{_e(str(d['worker']))}, refused {_e(str(d['refused']))}")
    health += ".</p>"
    return beat + window + live + health


def _per_record(Figure, s: dict) -> str:
    recs = s["records"]
    fig = Figure(figsize=(11, 6.5))
    axes = fig.subplots(2, 1)
    x = np.arange(len(recs))
    notes = []
    for ax, c in zip(axes, ABNORMAL):
        se = [_nan(r["beat"][c]["se"]) for r in recs]
        ppv = [_nan(r["beat"][c]["ppv"]) for r in recs]
        ax.bar(x - 0.2, np.nan_to_num(se), 0.4, label="Se", color=COLOURS[c])
        ax.bar(x + 0.2, np.nan_to_num(ppv), 0.4, label="+P", color=COLOURS[c], alpha=0.45)
        for i, r in enumerate(recs):
            if not r["beat"][c]["beats"]:
                ax.text(i, 0.02, "no beats", rotation=90, fontsize=7, ha="center", va="bottom", color="#555")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{c}")
        ax.set_xticks(x, [r["record"] for r in recs], rotation=90 if len(recs) > 12 else 0, fontsize=8)
        ax.legend(loc="upper right", fontsize=8)
        if not s["beat"][c]["beats"]:
            ax.text(0.5, 0.5, f"no {c} beats in these records", transform=ax.transAxes, ha="center", fontsize=14)
            notes.append(f"<p>{c}: no beats in these records.</p>")
    fig.suptitle("Se (solid) and +P (light) per record, whole record, 150 ms match window")
    fig.tight_layout()
    return _img(fig) + "".join(notes)


def _latency(Figure, s: dict, run: LiveRun) -> str:
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    from .evaluation import EC57_TOL_S
    from .live_eval import alarm_latencies

    tol = int(round(EC57_TOL_S * run.card.fs))
    any_found = False
    for c in ABNORMAL:
        vals = np.concatenate([alarm_latencies(r.collected, r.beat_sent_at, c, tol)[0] for r in run.records]) if run.records else np.zeros(0)
        if len(vals):
            any_found = True
            ax.hist(vals, bins=40, alpha=0.6, color=COLOURS[c], label=f"{c} (n={len(vals)})")
    if any_found:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no beats found: no latency to show", transform=ax.transAxes, ha="center")
    ax.set_xlabel("seconds from the beat's chunk being sent to the covering interval being published")
    ax.set_ylabel("beats")
    fig.tight_layout()
    lat = s["alarm_latency_s"]
    speed = s["settings"]["speed"]
    note = (
        "<p class='note'>At --speed 0 the chunks are sent as fast as the worker keeps up, so this measures the "
        "queue the evaluation itself keeps in the worker, not a bedside delay; the stream delay (the wait for "
        "the samples a detecting window needs) plus the processing time is what a monitor in real time sees. "
        "Run with --speed 1 to measure it directly.</p>"
        if not speed else f"<p class='note'>Replayed at {speed:g} &times; real time; sent times follow replay's clock.</p>"
    )
    text = "".join(f"<p>{c}: {_dist_text(s['alarm_latency_s']['by_class'][c])}</p>" for c in ABNORMAL)
    return _img(fig) + text + f"<p>All: p50 {_num(lat['p50'])} s, p95 {_num(lat['p95'])} s, max {_num(lat['max'])} s.</p>" + note


def _confusion(Figure, s: dict) -> str:
    classes = list(s["window"])
    fig = Figure(figsize=(4 * max(len(classes), 1), 3.6))
    axes = np.atleast_1d(fig.subplots(1, max(len(classes), 1)))
    notes = []
    for ax, c in zip(axes, classes):
        m = np.array(s["window"][c]["confusion"]["matrix"], dtype=float)
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{int(v)}", ha="center", va="center", color="black" if v < m.max() / 2 else "white")
        ax.set_xticks([0, 1], [f"no {c}", c])
        ax.set_yticks([0, 1], [f"no {c}", c])
        ax.set_xlabel("predicted (window probability >= threshold)")
        ax.set_ylabel("annotated (beat in window core)")
        ax.set_title(f"{c} windows")
        if m[1].sum() == 0:
            ax.text(0.5, -0.35, "no beats", transform=ax.transAxes, ha="center", color="#d62728")
            notes.append(f"<p>{c}: no beats, so no positive windows.</p>")
    fig.tight_layout()
    return _img(fig) + "".join(notes) + (
        "<p class='note'>Multilabel model: one 2 &times; 2 matrix per abnormal class. Windows whose only beat of the "
        "class sits within the edge margin are left out, as in the offline scores.</p>"
    )


def _grade(s: dict) -> str:
    g = s["grade"]
    if not g.get("windows"):
        return "<p>no beats: no window holds an S or V beat in its core.</p>"
    return _table(
        ["grade", "share of abnormal windows"],
        [["I: every abnormal beat inside an interval, no normal one", _pct(g["I"], 1)],
         ["II: every abnormal beat inside, some normal inside too", _pct(g["II"], 1)],
         ["III: some abnormal beat missed", _pct(g["III"], 1)]],
    ) + (f"<p>{g['windows']} windows; abnormal beats inside an interval: {_pct(g['abnormal_hit_rate'], 1)}; "
         f"normal beats kept out: {_pct(g['normal_suppression_rate'], 1)} (150 ms tolerance).</p>")


def _strips(Figure, s: dict, run: LiveRun) -> str:
    if not run.records:
        return "<p>no records were scored.</p>"
    scored = []
    for r, row in zip(run.records, s["records"]):
        vals = [row["beat"][c][k] for c in ABNORMAL for k in ("se", "ppv") if row["beat"][c][k] is not None]
        if vals:
            scored.append((float(np.mean(vals)), r))
    if not scored:
        scored = [(math.nan, run.records[0])]
    best = max(scored, key=lambda t: t[0])
    worst = min(scored, key=lambda t: t[0])
    out = []
    for label, (score, rec) in (("best", best), ("worst", worst)):
        centre, why = _strip_centre(rec, run, label == "best")
        fig = Figure(figsize=(11, 2.8))
        _draw_strip(fig.subplots(), rec, run, centre)
        fig.tight_layout()
        out.append(f"<h3>{label}: record {_e(rec.output.name)} (mean of its V/S Se and +P: {_pct(score, 1)}) &mdash; {_e(why)}</h3>")
        out.append(_img(fig))
    out.append("<p class='note'>Shaded: published intervals (red V, orange S). Letters: reference beats by AAMI class.</p>")
    return "".join(out)


def _strip_centre(rec: LiveRecord, run: LiveRun, best: bool) -> tuple[float, str]:
    """Where to look (seconds): a found abnormal beat for the best record, a miss or false alarm for the worst."""
    from .evaluation import EC57_TOL_S

    out, fs = rec.output, run.card.fs
    tol = int(round(EC57_TOL_S * fs))
    ab = np.isin(out.beat_aami, ABNORMAL)
    pos, cls = out.beat_samples[ab], out.beat_aami[ab]
    found = np.zeros(len(pos), bool)
    for c in ABNORMAL:
        ivs = [(iv.start, iv.end, 0.0) for iv in out.intervals if iv.label == c]
        found[cls == c] = inside_any(pos[cls == c], ivs, tol)
    if best and found.any():
        return pos[found][0] / fs, "around a detected abnormal beat"
    if not best and (~found).any():
        return pos[~found][0] / fs, "around a missed abnormal beat"
    false = [iv for iv in out.intervals if not inside_any(out.beat_samples[out.beat_aami == iv.label], [(iv.start, iv.end, 0.0)], tol).any()]
    if not best and false:
        return (false[0].start + false[0].end) / 2 / fs, "around a false alarm"
    if len(pos):
        return pos[0] / fs, "around the first abnormal beat"
    return rec.seconds / 2, "no abnormal beats: the middle of the record"


def _draw_strip(ax, rec: LiveRecord, run: LiveRun, centre: float) -> None:
    a = max(0.0, min(centre - STRIP_S / 2, rec.seconds - STRIP_S))
    b = min(rec.seconds, a + STRIP_S)
    i0, i1 = int(a * rec.fs_in), int(b * rec.fs_in)
    t = np.arange(i0, i1) / rec.fs_in
    y = rec.signal[i0:i1]
    ax.plot(t, y, color="black", lw=0.7)
    fs = run.card.fs
    for iv in rec.output.intervals:
        s, e = iv.start / fs, iv.end / fs
        if e >= a and s <= b:
            ax.axvspan(s, e, color=COLOURS.get(iv.label, "#1f77b4"), alpha=0.3, lw=0)
    top = float(np.max(y)) if len(y) else 1.0
    for p, c in zip(rec.output.beat_samples.tolist(), rec.output.beat_aami.tolist()):
        ts = p / fs
        if a <= ts <= b:
            ax.text(ts, top, c, color=COLOURS.get(c, "#1f77b4"), ha="center", va="bottom", fontsize=8, fontweight="bold")
    ax.set_xlim(a, b)
    ax.set_xlabel("s")
    ax.set_ylabel(f"{rec.lead} (mV)")
    ax.set_title(f"record {rec.output.name}, lead {rec.lead}{' (fallback)' if rec.output.lead_fallback else ''}, {rec.fs_in:g} Hz", fontsize=9)


def _records_table(s: dict) -> str:
    rows = []
    for r in s["records"]:
        row = [_e(r["record"]), f"{r['fs']:g}", _e(r["lead_used"]) + (" (fallback)" if r["lead_fallback"] else ""),
               f"{r['windows']}/{r['windows_expected']}"]
        for c in ABNORMAL:
            b = r["beat"][c]
            row += [_beats(b), _pct(b["se"], b["beats"]), _pct(b["ppv"], b["beats"] or b["intervals"])]
        g = r["grade"]
        row += [_pct(g["grade"]["I"], g["windows"]), _num(r["alarm_latency_s"]["V"]["p95"])]
        rows.append(row)
    head = ["record", "Hz", "lead", "windows"] + [f"{c} {k}" for c in ABNORMAL for k in ("beats", "Se", "+P")] + ["grade I", "V latency p95 (s)"]
    return _table(head, rows)


def _provenance(s: dict) -> str:
    return (f"<p>Command: <code>{_e(s.get('command') or 'stream-ecg evaluate')}</code></p>"
            f"<p>Model: {_e(s['model']['name'])} {_e(s['model']['version'])}; worker: {_e(str(s['worker']))}; "
            f"settings: {_e(str(s['settings']))}.</p>"
            "<p class='note'>Beat scores: an annotated beat is found when a published interval of its class lies "
            "within 150 ms of its R peak; an interval is confirmed when it holds such a beat "
            "(stream_ecg.evaluation.score_records, the code that scores the offline path).</p>")


# --- helpers ----------------------------------------------------------------------------------


def _img(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}'>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped where they hold names)."""
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows]
    return "".join(out) + "</table>"


def _e(text: str) -> str:
    return html.escape(str(text))


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def _pct(v, support) -> str:
    if not support:
        return "no beats"
    return "n/a" if v is None or v != v else f"{100 * v:.1f} %"


def _num(v, digits: int = 2) -> str:
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def _dist_text(d: dict) -> str:
    if not d["n"]:
        return "no beats found"
    return f"p50 {_num(d['p50'])} s, p95 {_num(d['p95'])} s, max {_num(d['max'])} s ({d['n']} beats)"


def _beats(d: dict) -> str:
    return "no beats" if not d.get("beats") else str(d["beats"])
