"""Turn a bedside training run into a shipped model folder: weights, card, DS2 metrics, latency."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from stream_ecg.card import CARD_FILE, CLASS_RULE_KEYS, ModelCard
from stream_ecg.data import excerpt_dir, load_record
from stream_ecg.data.mitdb import DS1, DS2
from stream_ecg.dsp import DspConfig
from stream_ecg.evaluation import score_records
from stream_ecg.intervals import IntervalRule
from stream_ecg.morphology import MIN_BEATS, POST_S, PRE_S
from stream_ecg.infer import load_model
from stream_ecg.fusion import infer_windows
from stream_ecg.offline import run_record
from stream_ecg.rhythm import PREMATURITY_REFERENCES, STREAM_CENTRES, STREAM_CONTEXT

from .bedside import ABNORMAL, CLASSES, BedsideConfig, record_windows
from .export import Deployable, write_model_folder
from .train import load_checkpoint

INTENDED_USE = (
    "Research and engineering evaluation of streaming arrhythmia detection on {leads} "
    "ambulatory/bedside ECG. Research software, NOT a medical device: not cleared or approved for "
    "clinical use, not for diagnosis or patient monitoring decisions."
)
LIMITS = (
    "Trained on MIT-BIH DS1 records (1970s Holter recordings of 47 patients, 360 Hz; see training); judged on DS2. "
    "Paced rhythms are out of scope (paced records excluded). F and Q beats are not classes. The rhythm channels "
    "come from an R-peak detector inside each 5.6 s window: irregular rhythms with normal beats (atrial "
    "fibrillation, marked sinus arrhythmia, AV block with dropped beats) raise false S alarms, and missed or "
    "extra detections (tall T waves, noise) distort them. Performance on other populations, devices, lead "
    "placements and noise levels is unknown; "
)
ONE_LEAD_LIMITS = "12-lead input is served by picking lead II (or the first lead) only."
CHEST_LIMITS = (
    "the chest slot takes the first of {names} the stream has (MIT-BIH's second lead is V1 in most "
    "records), else the stream's other lead, flagged; a one-lead stream puts its only lead in both slots (flagged), "
    "which the model saw in training on a share of windows but is judged on only where a record lacks a second lead."
)

CONTEXT_LIMITS = (
    " The RR reference is the stream's own recent median: for the first beats of a stream it is the window's, "
    "and after a lasting change of rate (or a long run of ectopy) it follows the new rate within a few minutes, "
    "so persistent ectopy stops reading as early once it dominates the history."
)
PREMATURE_LIMITS = (
    " S intervals are published only on beats that come early against the window's median RR "
    "(interval_rule.premature): where ectopic atrial beats are most of a window's beats (frequent atrial ectopy, "
    "MIT-BIH 232) they are not early against that median and go unmarked, though the window's S probability still alarms."
)

PREMATURE_CONTEXT_LIMITS = (
    " S intervals are published only on beats that come early against the stream's recent RRs (interval_rule."
    "premature_context, or the card's prematurity_reference \"stream\"; per-stream state, the window's own median until "
    "the stream holds 8 RRs: its first seconds, after a new lead layout, or after a gap longer than that span): after a "
    "lasting rise of rate normal beats read as early until that span follows it, and ectopy that persists for most of "
    "the span can stop reading as early (against its median; against the mean, prematurity_centre \"mean\", long "
    "pauses hold the reference up instead, so normal beats after pauses or in 2:1 AV block read as early)."
)


REGULAR_LIMITS = (
    " S intervals are published only in windows whose rhythm is regular once their early beats are set aside "
    "(interval_rule.regular): in atrial fibrillation, but also around frequent or clustered supraventricular ectopy, "
    "S beats can go unmarked though the window's S probability still alarms."
)


REGULAR_STREAM_LIMITS = (
    " S intervals are published only while the stream's last interval_rule.regular_context samples (30 s by default) "
    "hold a regular rhythm once early beats are set aside (interval_rule.regular_stream, per-stream state): for the "
    "first seconds of a stream it judges from fewer beats, and after an episode of atrial fibrillation S beats go "
    "unmarked until the irregular RRs have left that span."
)


KURTOSIS_LIMITS = (
    " S intervals are published only in windows whose first lead looks like clean ECG (kurtosis >= "
    "interval_rule.min_kurtosis): in noise, but also where wide or frequent QRS complexes flatten the kurtosis "
    "(bundle branch block, fast rates), S beats can go unmarked though the window's S probability still alarms."
)


USUAL_LIMITS = (
    " An early beat is marked S only if its QRS matches the window's median beat (interval_rule.premature_usual): "
    "supraventricular beats conducted aberrantly (wide QRS), and S beats in windows where most beats are ectopic "
    "(so the median beat is not the usual one), can go unmarked though the window's S probability still alarms."
)


LEFT_EDGE_LIMITS = (
    " A window publishes no interval centred in its first interval_rule.left_edge samples, so an abnormal beat is "
    "marked only if a window that holds it away from that edge lights it: a stream's first left_edge samples, and those "
    "after a gap (which restarts the stream's windows), are never marked, and a beat that only its last window calls "
    "goes unmarked."
)

P_WAVE_LIMITS = (
    " S intervals are published only in windows whose beats share one P wave (interval_rule.min_p_consistency): "
    "early beats in atrial fibrillation or flutter go unmarked by design, and so can S beats in windows where most "
    "beats are ectopic from several foci, or where noise or a low P wave on the leads it reads hides the P wave."
)
# the sentence as cards shipped before 2026-12-05 carry it (first lead only); a recard replaces it with P_WAVE_LIMITS
P_WAVE_LIMITS_FIRST_LEAD = P_WAVE_LIMITS.replace("on the leads it reads", "on the first lead")

PAUSE_LIMITS = (
    " A beat followed by a pause also counts as early (interval_rule.premature_pause): in an S-alarming window a normal "
    "beat before a sinus pause, a dropped beat or a blocked premature beat can be marked S."
)

CONFIRM_LIMITS = (
    " An interval is published only once interval_rule.confirm windows have lit it: each mark comes up to confirm - 1 "
    "hops later, and a beat that fewer windows call goes unmarked (counted in stream_ecg_intervals_unconfirmed_total)."
)


CLASS_RULES_TEXT = (
    "the network runs once; that class's intervals are labelled under these settings, the fusion re-applied to the "
    "network's raw outputs and to each re-run's, and the other classes' under the card's own; the window probabilities "
    "published are the card's own (stream_ecg.postprocess.label_windows)"
)


def rule_limits(limits: str, rule: IntervalRule, stream_reference: bool = False) -> str:
    """The card's limits with the sentences its interval rule adds (once each), so a recarded model states them too.
    `stream_reference`: the card's prematurity_reference is "stream", so the premature rule reads the stream's RRs."""
    if rule.premature > 0 and (rule.premature_context > 0 or stream_reference):  # the window-median sentence no longer holds
        limits = limits.replace(PREMATURE_LIMITS, "")
        if PREMATURE_CONTEXT_LIMITS not in limits:
            limits += PREMATURE_CONTEXT_LIMITS
    elif rule.premature > 0:  # back to the window's median (a card recarded to another reference)
        limits = limits.replace(PREMATURE_CONTEXT_LIMITS, "")
        if PREMATURE_LIMITS not in limits:
            limits += PREMATURE_LIMITS
    limits = limits.replace(P_WAVE_LIMITS_FIRST_LEAD, P_WAVE_LIMITS)
    for applies, sentence in ((rule.regular > 0, REGULAR_LIMITS), (rule.regular_stream > 0, REGULAR_STREAM_LIMITS),
                              (rule.min_kurtosis > 0, KURTOSIS_LIMITS), (rule.premature_usual > 0, USUAL_LIMITS),
                              (rule.premature_pause > 0, PAUSE_LIMITS),
                              (rule.min_p_consistency > 0, P_WAVE_LIMITS),
                              (rule.left_edge > 0, LEFT_EDGE_LIMITS), (rule.confirm > 1, CONFIRM_LIMITS)):
        if applies and sentence not in limits:
            limits += sentence
    return limits


def _with_rule(card: dict, rule: dict | None) -> None:
    """Apply interval-rule overrides to a card dict (validated by IntervalRule), and the limit sentence they bring."""
    card["interval_rule"] = IntervalRule.from_dict({**card["interval_rule"], **(rule or {})}).to_dict()
    card["limits"] = rule_limits(card.get("limits", ""), IntervalRule.from_dict(card["interval_rule"]),
                                 card.get("prematurity_reference") == "stream")


INTERVAL_LABELLING = (
    "a window alarming for one class gives it to each attention interval whose peak reaches "
    "interval_rule.min_score of the window's peak; with interval_rule.snap > 0 each interval first moves onto the R peak "
    "(stream_ecg.rhythm.r_peaks on the first lead) nearest its attention peak, if one lies within snap samples of it, "
    "and is published as that R peak +- snap_half samples, else dropped; a window alarming for S and V re-runs the "
    "model with each interval removed (+-18 samples) and gives it the class whose probability falls most relative to "
    "its threshold; with interval_rule.keep_drop > 0 every alarming window with several intervals is re-run so and an "
    "interval is published only if removing it lowers its class logit by keep_drop x the window's largest drop; "
    "with interval_rule.premature > 0 an S-alarming window's S intervals go onto its premature beats (R peaks whose "
    "rr_prev channel is <= -premature), each moved to the most premature one within premature_reach samples or dropped, "
    "or with premature_all every premature beat outside a V interval published (with premature_attention > 0 only "
    "those where the attention map at R reaches premature_attention of its peak), as R +- snap_half (with "
    "premature_usual > 0 either way only the premature beats whose residual RMS over R +- 36 samples is below "
    "premature_usual count: shaped like the window's median beat; and with shape_split an interval the re-run gives to "
    "S in a window alarming for S and V goes to V when the beat it lit is not so shaped); "
    "with interval_rule.premature_context > 0 a beat is premature when its RR (from the R peaks) is <= 1 - premature "
    "times the premature_centre of the stream's RRs whose later R peak lies in the premature_context samples ending "
    "with the window (per-stream state: stream_ecg.postprocess.stream_rr_reference; the window's own while the stream "
    "holds fewer than 8); "
    "with interval_rule.premature_pause > 0 a beat no later than that reference (or at least premature_pause_early "
    "early) also counts as premature when its RR "
    "before is <= 1 - premature_pause times its RR after (both from the window's R peaks; the window's last beat is "
    "judged on its RR before alone); "
    "with interval_rule.distinct > 0 a V interval is kept only if the beat it lit differs from the window's median beat "
    "(residual RMS over R +- 36 samples >= distinct) or, with distinct_early, came 10 % early; "
    "with interval_rule.regular > 0 a window's S intervals are published only if its RR irregularity (the coefficient "
    "of variation of its RRs once each RR 10 % shorter than the median, and the RR after it, are left out; "
    "stream_ecg.intervals.rr_irregularity) is <= regular; "
    "with interval_rule.regular_stream > 0 they are published only if the same measure over the stream's RRs whose "
    "later R peak lies in the regular_context samples ending with the window (each beat once, per-stream state: "
    "stream_ecg.rhythm.RecentRhythm, stream_ecg.postprocess.stream_irregularity) is <= regular_stream; "
    "with interval_rule.min_kurtosis > 0 a window's S intervals are published only if its first lead's kurtosis "
    "(stream_ecg.quality.kurtosis_sqi, normal = 3) is >= min_kurtosis; "
    "with interval_rule.min_p_consistency > 0 only if its beats share one P wave on its first lead (p_wave_leads "
    "\"first\") or on average over its leads (\"mean\"): the mean correlation of "
    "each whole beat's 250-80 ms before its R peak with the window's median beat's (stream_ecg.morphology."
    "p_wave_consistency; leads it cannot judge left out) is >= min_p_consistency, "
    "or cannot be judged (under 3 whole beats); "
    "with interval_rule.left_edge > 0 a window publishes no interval whose centre lies in its first left_edge "
    "samples; "
    "with interval_rule.confirm > 1 an interval is published only once that many windows have lit it (up to "
    "confirm - 1 hops later), with the extent they gave it (stream_ecg.postprocess.IntervalMerger); "
    "score = window class probability x the interval's normalised attention peak"
)

RESIDUAL_TEXT = (
    "residual: the first z-scored lead minus the window's median beat (sample by sample over the snippets from "
    f"{PRE_S} s before to {POST_S} s after each R peak lying whole in the window), over each beat's span; zeros "
    f"with fewer than {MIN_BEATS} whole beats; stream_ecg.morphology.beat_residual"
)


def _rhythm_text(dsp: dict) -> str:
    if not dsp.get("rhythm"):
        return "none"
    ref = (f"the median of the stream's last {dsp['rhythm_context']} RR intervals (per-stream state, "
           "stream_ecg.rhythm.RRHistory)" if dsp.get("rhythm_context") else "the window's median RR")
    both = "; rr_prev_window / rr_next_window: the same over the window's median RR" if dsp.get("rhythm_both") else ""
    return (f"rr_prev / rr_next: each beat's RR before / after it over {ref}, minus 1, painted over the beat's span{both}; "
            f"R peaks found in the z-scored lead by stream_ecg.rhythm.r_peaks, detector {dsp.get('peak_detector', 'energy')!r} "
            "(dsp.peak_detector, also used by the interval rules)")


PREMATURITY_REFERENCE_TEXT = (
    "the rhythm fusion and interval_rule.premature take each beat's RR over the mean of the window's RRs, not its "
    "median: the rr_prev channel read at the R peaks of the first lead, (v + 1) / mean(v + 1) - 1 over its known "
    "beats, clipped as the channel is (stream_ecg.rhythm.rereferenced); the network's input is unchanged"
)


STREAM_REFERENCE_TEXT = (
    "the rhythm fusion and interval_rule.premature take each beat's RR (from the R peaks of the first lead) over the "
    "prematurity_centre (median or mean) of the stream's RRs whose later R peak lies in the last prematurity_context "
    "samples up to the window's end (per-stream state: stream_ecg.postprocess.stream_rr_reference; each beat once; a gap keeps it, a new lead layout "
    "starts it afresh), minus 1, clipped as the rr_prev channel is (stream_ecg.rhythm.stream_relative); while the "
    "stream holds fewer than 8 RRs (its first seconds, or after a gap longer than that span) the window's own median, "
    "as the rr_prev channel has it; the network's input is unchanged"
)


def _reference_fields(reference: str, context: int = STREAM_CONTEXT, centre: str = "median") -> dict:
    """A card's prematurity reference, written only when it is not the rr_prev channel's own median."""
    if reference == "stream":
        return {"prematurity_reference": reference, "prematurity_context": int(context),
                **({"prematurity_centre": centre} if centre != "median" else {}),
                "prematurity_reference_rule": STREAM_REFERENCE_TEXT}
    return {} if reference == "median" else {"prematurity_reference": reference, "prematurity_reference_rule": PREMATURITY_REFERENCE_TEXT}


def card_from_run(ckpt: dict, name: str, version: str, command: str) -> dict:
    meta = ckpt["bedside"]
    cfg = meta["bedside_config"]
    mc = ckpt["model_config"]
    leads = BedsideConfig.from_dict(cfg).lead_contract
    return {
        "name": name,
        "version": version,
        "fs": cfg["dsp"]["fs"],
        "leads": list(leads.leads),
        "lead_aliases": {k: list(v) for k, v in leads.aliases.items()},
        "lead_fallback": leads.fallback,
        "window": cfg["window"],
        "hop": cfg["hop"],
        "classes": list(CLASSES),
        "abnormal": list(ABNORMAL),
        "output": "multilabel: probs[normal] = prod(1 - p_abnormal); S and V are independent sigmoids",
        "thresholds": meta["thresholds"],
        **({"rhythm_fusion": meta["fusion"],
            "rhythm_fusion_rule": "each listed class's logit + weight x rr prematurity, -log(1 + min over the window of "
            "the rr_prev input channel) = -log(shortest RR / the channel's reference RR); stream_ecg.fusion; thresholds "
            "apply to the fused probabilities"} if meta.get("fusion") else {}),
        **_reference_fields(meta.get("prematurity_reference", "median"), meta.get("prematurity_context", STREAM_CONTEXT),
                            meta.get("prematurity_centre", "median")),
        "dsp": cfg["dsp"],
        "normalisation": f"per-window, per-lead z-score (std floored at {cfg['dsp']['norm_eps']} mV)",
        "inputs": [*leads.leads, *DspConfig.from_dict(cfg["dsp"]).extra_channels],
        "rhythm": _rhythm_text(cfg["dsp"]),
        **({"residual": RESIDUAL_TEXT} if cfg["dsp"].get("beat_residual") else {}),
        "pooling": mc["pooling"],
        "pool_kernel": mc["pool_kernel"],
        "interval_rule": cfg["rule"],
        "interval_labelling": INTERVAL_LABELLING,
        "model_config": mc,
        "ensemble": {
            "members": int(ckpt.get("members", 1)),
            "seeds": meta.get("seeds", [ckpt["train_config"]["seed"]]),
            "combine": "mean of the members' logits and of their attention maps",
        },
        "training": {
            **({
                "data": "MIT-BIH DS1 (de Chazal 2004), cross-fitted: each member trained on DS1 minus its fold",
                "folds": [list(f) for f in cfg["folds"]],
                "validation_records": list(DS1),
                "validation": ("out-of-fold: each DS1 record scored by the mean of the members, one per seed set, that held it out"
                               if meta.get("combined_from") else "out-of-fold: each DS1 record scored by the one member that held it out"),
                "train_records": list(DS1),
            } if cfg.get("folds") else {
                "data": "MIT-BIH DS1 (de Chazal 2004) minus validation records",
                "validation_records": list(cfg["val_records"]),
                "train_records": [r for r in DS1 if r not in cfg["val_records"]],
            }),
            "windows": {"train": meta["train_windows"], "val": meta["val_windows"]},
            "train_seconds": meta["train_seconds"],
            "best_epoch": meta["best_epoch"],
            "train_config": ckpt["train_config"],
            **({"distilled_from": {"teacher": meta["teacher"], "weight": meta["distill"],
                                   "how": "each member's loss mixes in the cross-entropy against the teacher's sigmoid outputs on the same augmented batch"}}
               if meta.get("teacher") else {}),
            "command": command,
            **({"fused_by": meta["fused_by"]} if meta.get("fused_by") else {}),
            **({"guarded_by": meta["guarded_by"],
                "guard": [{k: m[k] for k in ("member", "seed", "f1", "kept_seed")} for m in meta["guard"]["members"]]}
               if meta.get("guarded_by") else {}),
        },
        "intended_use": INTENDED_USE.format(leads="two-lead (MLII-like plus one chest lead)" if "chest" in leads.leads else "single-lead (MLII-like)"),
        "limits": LIMITS + (CHEST_LIMITS.format(names=", ".join(leads.aliases["chest"])) if "chest" in leads.leads else ONE_LEAD_LIMITS) + (CONTEXT_LIMITS if cfg["dsp"].get("rhythm_context") else ""),
    }


def check_windows(cfg: BedsideConfig, n: int = 32) -> np.ndarray:
    """Real windows from the bundled excerpt for the ONNX-vs-torch check."""
    return record_windows("208", cfg, cfg.hop, excerpt_dir()).x[:n]


def measure_latency(model_dir: Path, window: int, repeats: int = 30) -> dict:
    """Per-window latency (ms), one thread, batch 1 and 32, for onnxruntime and torch."""
    out = {}
    for backend in ("onnxruntime", "torch"):
        model = load_model(model_dir, backend, threads=1)
        for batch in (1, 32):
            x = np.random.default_rng(0).normal(size=(batch, model.card.channels, window)).astype(np.float32)
            ref = np.full(batch, 0.8 * model.card.fs)  # a "stream" card's fusion reads one (RR 0.8 s); others ignore it
            infer_windows(model, x, ref)
            t0 = time.perf_counter()
            for _ in range(repeats):
                infer_windows(model, x, ref)
            out[f"{backend}_batch{batch}"] = (time.perf_counter() - t0) / repeats / batch * 1000
    return out


def evaluate_ds2(model_dir: Path, data_dir=None, margin: int = 72, records: tuple[str, ...] = DS2) -> dict:
    """The offline evaluation (DS2 unless told otherwise) through the runtime's own code path (onnxruntime)."""
    model = load_model(model_dir, "onnxruntime", threads=2)
    t0 = time.perf_counter()
    outputs = [run_record(model, load_record(r, data_dir)) for r in records]
    whole = score_records(outputs, model.card, margin)
    from_5min = score_records(outputs, model.card, margin, skip_s=300.0)
    return {"whole_record": whole, "from_5_min": from_5min, "seconds": time.perf_counter() - t0}


def ship(run: Path, out: Path, name: str, version: str, command: str, data_dir=None, evaluate: bool = True,
         rule: dict | None = None, results: Path = Path("docs/results")) -> dict:
    model, ckpt = load_checkpoint(run / "checkpoint.pt")
    cfg_d = ckpt["bedside"]["bedside_config"]
    cfg = BedsideConfig.from_dict(cfg_d)
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    card = card_from_run(ckpt, name, version, metrics.get("command", ""))
    if metrics.get("trained_by"):  # a combined run (trainer combine): its command joins the runs these trained
        card["training"]["trained_by"] = list(metrics["trained_by"])
        card["training"]["then_by"] = [list(v) for v in metrics.get("then_by", [[] for _ in metrics["trained_by"]])]
    card["export_command"] = command
    _with_rule(card, rule)
    card = write_model_folder(Deployable(model, "multilabel"), out, card, check_windows(cfg))
    card["latency_ms"] = measure_latency(out, cfg.window)
    if evaluate:
        card["metrics"] = _ds2_metrics(out, data_dir, cfg.margin, name, command, results)
    return _write_card(out, card)


def reevaluate(model_dir: Path, command: str, data_dir=None, results: Path = Path("docs/results"),
               margin: int = BedsideConfig.margin) -> dict:
    """A shipped model's DS2 evaluation run again with the current scoring (the same model files, checksums verified):
    its card's metrics and README and `results`/bedside_ds2.json are rewritten, nothing else. Why: when the scoring
    gains a measure (EC57's +P), a shipped model gets it without a new version of a model that did not change."""
    from stream_ecg.card import load_card

    load_card(model_dir)  # refuses a folder whose files do not match its card
    card = json.loads((Path(model_dir) / CARD_FILE).read_text())
    card["metrics"] = _ds2_metrics(Path(model_dir), data_dir, margin, card["name"], command, results)
    return _write_card(Path(model_dir), card)


def recard(source: Path, out: Path, name: str, version: str, command: str, rule: dict, data_dir=None,
           evaluate: bool = True, results: Path = Path("docs/results"), margin: int = BedsideConfig.margin,
           thresholds: dict | None = None, reference: str | None = None, context: int = STREAM_CONTEXT,
           fusion: dict[str, float] | None = None, centre: str = "median",
           class_rules_from: dict[str, Path] | None = None) -> dict:
    """A shipped model with a new interval rule (and class thresholds, and prematurity reference): the same model files
    (checksums verified), a card taking `rule`'s and `thresholds`' overrides, re-measured latency and
    DS2 metrics. `class_rules_from` ({class: shipped model folder with the same files}): that class's intervals are
    labelled under that card's interval rule and prematurity reference (the card's class_rules).

    Why: the interval rule and thresholds are post-processing, so a choice made on DS1 after training
    can ship on the very network that was judged, without retraining (which does not reproduce bit
    for bit across CPU models)."""
    import shutil

    from stream_ecg.card import load_card

    load_card(source)  # refuses a folder whose files do not match its card
    if reference is not None and reference not in PREMATURITY_REFERENCES:
        raise ValueError(f"prematurity reference must be one of {PREMATURITY_REFERENCES}, got {reference!r}")
    if centre not in STREAM_CENTRES:
        raise ValueError(f"prematurity centre must be one of {STREAM_CENTRES}, got {centre!r}")
    card = json.loads((Path(source) / CARD_FILE).read_text())
    derived = {"name": card["name"], "version": card["version"], "export_command": card.get("export_command")}
    out.mkdir(parents=True, exist_ok=True)
    for f in card["files"]:
        shutil.copy2(Path(source) / f, out / f)
    card = {**card, "name": name, "version": version, "export_command": command, "derived_from": derived,
            "interval_labelling": INTERVAL_LABELLING}
    _with_rule(card, rule)
    unknown = set(thresholds or {}) - set(card["thresholds"])
    if unknown:
        raise ValueError(f"thresholds for classes the card does not alarm on: {sorted(unknown)}")
    card["thresholds"] = {**card["thresholds"], **(thresholds or {})}
    if thresholds:  # the README must not credit these to the training run's threshold rule
        card["threshold_overrides"] = {**card.get("threshold_overrides", {}), **thresholds}
    if fusion is not None:  # a weight chosen out of fold on DS1 (trainer fuse), on the same network
        card["rhythm_fusion"] = {k: float(v) for k, v in fusion.items()}
    if reference is not None:
        card = {k: v for k, v in card.items()
                if k not in ("prematurity_reference", "prematurity_reference_rule", "prematurity_context", "prematurity_centre")}
        card.update(_reference_fields(reference, context, centre))
        card["limits"] = rule_limits(card.get("limits", ""), IntervalRule.from_dict(card["interval_rule"]), reference == "stream")
    for label, other in (class_rules_from or {}).items():
        _with_class_rule(card, label, Path(other))
    card.pop("metrics", None)
    ModelCard.from_dict(card)  # refuses a class rule the card cannot serve before anything is measured
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    card["latency_ms"] = measure_latency(out, int(card["window"]))
    if evaluate:
        card["metrics"] = _ds2_metrics(out, data_dir, margin, name, command, results)
    return _write_card(out, card, readme=(Path(source) / "README.md").exists())  # a shipped model has one


def _with_class_rule(card: dict, label: str, other: Path) -> None:
    """Put `other`'s interval rule and prematurity reference in the card's class_rules for `label`; `other` must be a
    shipped model with the same files (the network runs once for every class)."""
    from stream_ecg.card import load_card

    theirs = load_card(other)  # refuses a folder whose files do not match its card
    if theirs.files != card["files"]:
        raise ValueError(f"{other} ships other model files than the card: class_rules re-label one network's outputs")
    card.setdefault("class_rules", {})[label] = {
        k: theirs.interval_rule.to_dict() if k == "interval_rule" else getattr(theirs, k) for k in CLASS_RULE_KEYS}
    card.setdefault("class_rules_from", {})[label] = {"name": theirs.name, "version": theirs.version}


def _ds2_metrics(out: Path, data_dir, margin: int, name: str, command: str, results: Path) -> dict:
    """The card's DS2 metrics; the whole evaluation is written to results/bedside_ds2.json."""
    ev = evaluate_ds2(out, data_dir, margin)
    w = ev["whole_record"]
    results.mkdir(parents=True, exist_ok=True)
    (results / "bedside_ds2.json").write_text(json.dumps({**ev, "model": name, "command": command}, indent=2, default=float))
    return {
        "ds2": {
            "beat": {c: {k: w["beat"][c][k] for k in ("se", "ppv", "ppv_ec57")} for c in ABNORMAL},
            "window": {c: {k: w["window"][c][k] for k in ("se", "precision", "auc")} for c in ABNORMAL},
            "beat_from_5_min": {c: {k: ev["from_5_min"]["beat"][c][k] for k in ("se", "ppv", "ppv_ec57")} for c in ABNORMAL},
            "evaluation_seconds": ev["seconds"],
            "command": command,
        }
    }


def _write_card(out: Path, card: dict, readme: bool = True) -> dict:
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    if readme:
        (out / "README.md").write_text(model_readme(card))
    ModelCard.from_dict(card)
    return card


def _pct(v) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f} %"


def model_readme(card: dict) -> str:
    overrides = card.get("threshold_overrides", {})
    run_thresholds = {k: v for k, v in card["thresholds"].items() if k not in overrides}  # credit each to its rule
    trained_by = card["training"].get("trained_by", [])  # a combined run's seed sets, each trained apart
    lines = [
        f"# {card['name']} (v{card['version']})",
        "",
        "> " + card["intended_use"],
        "",
        "## Contract",
        f"- input: lead(s) {card['leads']} (aliases {card['lead_aliases']}; fallback: {card['lead_fallback']} lead, flagged), "
        f"resampled to {card['fs']:g} Hz",
        f"- window {card['window']} samples ({card['window'] / card['fs']:.2f} s), hop {card['hop']} samples "
        f"({card['hop'] / card['fs']:.2f} s)",
        f"- DSP: {card['dsp']}; {card['normalisation']}",
        f"- classes: {card['classes']} ({card['output']})",
        (f"- thresholds (max window F1 on the out-of-fold windows of every DS1 record, each scored by the member that held it out): {run_thresholds}"
         if card["training"].get("folds") else
         f"- thresholds (chosen on the validation records {card['training']['validation_records']}): {run_thresholds}"),
        *([f"- threshold overrides, chosen after training (`trainer recard`; rules in docs/results_notes.md): "
           f"{overrides}"] if overrides else []),
        *([f"- rhythm fusion {card['rhythm_fusion']}: {card['rhythm_fusion_rule']}"] if card.get("rhythm_fusion") else []),
        *([f"- prematurity reference {card['prematurity_reference']}"
           f"{' (' + card['prematurity_centre'] + ')' if card.get('prematurity_centre') else ''}: {card['prematurity_reference_rule']}"]
          if card.get("prematurity_reference") else []),
        f"- inputs: {card.get('inputs', card['leads'])}; rhythm channels: {card.get('rhythm', 'none')}",
        *([f"- beat {card['residual']}"] if card.get("residual") else []),
        f"- model: joint segmenter + classifier {card['model_config']}, ensemble of {card['ensemble']['members']} "
        f"(seeds {card['ensemble']['seeds']}; {card['ensemble']['combine']})",
        f"- attention pooling: {card['pooling']}, kernel {card['pool_kernel']}; interval rule {card['interval_rule']}",
        *[f"- {c} intervals under {from_.get('name', 'another rule')}'s settings instead (class_rules; {CLASS_RULES_TEXT}): "
          f"{card['class_rules'][c]}" for c, from_ in card.get("class_rules_from", {}).items()],
        f"- interval labels: {card['interval_labelling']}",
        "",
        "## Files",
        *[f"- `{k}` sha256 `{v}`" for k, v in card["files"].items()],
        "",
    ]
    if "metrics" in card:
        m = card["metrics"]["ds2"]
        lines += [
            "## DS2 (inter-patient, never seen in training), offline through the runtime's code path",
            "",
            "| class | beat Se | beat +P | beat +P (EC57) | window Se | window precision | window AUC |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *[
                f"| {c} | {_pct(m['beat'][c]['se'])} | {_pct(m['beat'][c]['ppv'])} | {_pct(m['beat'][c].get('ppv_ec57'))} | "
                f"{_pct(m['window'][c]['se'])} | "
                f"{_pct(m['window'][c]['precision'])} | {m['window'][c]['auc']:.3f} |"
                for c in card["abnormal"]
            ],
            "",
            "de Chazal 2004 (same DS1/DS2 split): VEB Se 77.7 % +P 81.9 %; SVEB Se 75.9 % +P 38.5 %. Beat +P counts every "
            "published interval; +P (EC57) leaves out, as EC57 and de Chazal do, V intervals that lit only fusion or "
            "unclassifiable beats and S intervals that lit only unclassifiable ones (stream_ecg.scoring.EC57_NOT_COUNTED).",
            "",
        ]
    if "latency_ms" in card:
        lines += ["## Latency per window (ms, one CPU thread)", "", *[f"- {k}: {v:.3f}" for k, v in card["latency_ms"].items()], ""]
    lines += [
        "## Reproduce",
        *([line for i, c in enumerate(trained_by) for line in
           [f"- train: `{c}`", *[f"  - then: `{t}`" for t in card["training"].get("then_by", [[]] * len(trained_by))[i]]]]),
        f"- {'combine' if trained_by else 'train'}: `{card['training']['command']}` "
        f"({card['training']['train_seconds']:.0f} s{' of training in all' if trained_by else ''} on 2 cores)",
        *([f"- rhythm fusion and thresholds: `{card['training']['fused_by']}`"] if card["training"].get("fused_by") else []),
        *([f"- members retrained by the guard: `{card['training']['guarded_by']}`"] if card["training"].get("guarded_by") else []),
        f"- export + evaluate: `{card.get('export_command', '')}`",
        "",
        "## Limits",
        card["limits"],
        "",
        "Data: MIT-BIH Arrhythmia Database (PhysioNet, ODC-By 1.0).",
    ]
    return "\n".join(lines) + "\n"


def unpack(model_dir: Path, out: Path, command: str = "") -> dict:
    """A cross-fitted run (`out`/checkpoint.pt) rebuilt from a shipped model folder: its members' weights (from the
    .pt2) with the card's folds, DSP, leads, interval rule, thresholds, fusion and prematurity reference, so `trainer
    validate` and `trainer fuse` score the very networks that ship, out of fold on DS1.

    Why: runs/ is not kept, and retraining a recipe on another CPU model gives a sibling network, not the shipped one.
    The card does not record the training margin; the run takes BedsideConfig's default, as `recard` does. A card's
    class_rules are not carried: score such a card with `trainer validate --model` (its card) on the unpacked run."""
    import torch

    from stream_ecg.card import load_card

    from .export import deployable_from_folder

    load_card(model_dir)  # refuses a folder whose files do not match its card
    raw = json.loads((Path(model_dir) / CARD_FILE).read_text())
    training = raw.get("training", {})
    if not training.get("folds") or "ensemble" not in raw:
        raise ValueError(f"{model_dir} is not a cross-fitted ensemble (its card has no training.folds): nothing is held out")
    ensemble = deployable_from_folder(Path(model_dir)).model
    cfg = BedsideConfig(window=int(raw["window"]), hop=int(raw["hop"]), dsp=DspConfig.from_dict(raw["dsp"]),
                        rule=IntervalRule.from_dict(raw["interval_rule"]), folds=tuple(tuple(f) for f in training["folds"]),
                        leads=tuple(raw["leads"]))
    meta = {"bedside_config": cfg.to_dict(), "thresholds": raw["thresholds"], "fusion": raw.get("rhythm_fusion", {}),
            "prematurity_reference": raw.get("prematurity_reference", "median"),
            **({"prematurity_context": raw["prematurity_context"]} if "prematurity_context" in raw else {}),
            **({"prematurity_centre": raw["prematurity_centre"]} if "prematurity_centre" in raw else {}),
            "seeds": raw["ensemble"].get("seeds"),
            "train_windows": training.get("windows", {}).get("train"), "val_windows": training.get("windows", {}).get("val"),
            "train_seconds": training.get("train_seconds"), "best_epoch": training.get("best_epoch"),
            "unpacked_from": str(model_dir), "unpacked_by": command}
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": raw["model_config"], "train_config": training.get("train_config", {}),
                "state_dict": ensemble.state_dict(), "history": [], "best_epoch": training.get("best_epoch"),
                "members": len(ensemble.members), "bedside": meta}, out / "checkpoint.pt")
    return {"run": str(out), "members": len(ensemble.members), "folds": [list(f) for f in cfg.folds],
            "thresholds": meta["thresholds"], "fusion": meta["fusion"], "prematurity_reference": meta["prematurity_reference"]}
