"""`stream-ecg evaluate`: live results -> RecordOutput -> the offline scoring code, known answers,
the bundled excerpt end to end (JSON keys, report sections, parity with the offline path), a
synthetic 12-lead 250 Hz record, and lost windows that must show up in the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import wfdb
from typer.testing import CliRunner

from stream_ecg.card import CardError, default_model_dir, load_card
from stream_ecg.cli import app
from stream_ecg.data import Beats, excerpt_dir, load_record
from stream_ecg.evaluation import score_records
from stream_ecg.infer import load_model
from stream_ecg.live_eval import (
    Collected,
    EvalSettings,
    LiveRecord,
    LiveRun,
    alarm_latencies,
    beat_sent_at,
    collect_results,
    drop_counts,
    evaluate,
    grade_record,
    run_live,
    summarise,
)
from stream_ecg.offline import run_record
from stream_ecg.report_html import SECTIONS, write_report
from stream_ecg.wire import Interval, Result
from stream_ecg.worker import Worker

runner = CliRunner()
TOL = 54  # 150 ms at 360 Hz
MARGIN = 72


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    """The shipped model (real intervals to score); the tiny random one where none is shipped."""
    try:
        path = default_model_dir()
        load_card(path)
        return path
    except CardError:
        return request.getfixturevalue("tiny_model_dir")


def _result(card, start: int, published: float, intervals=(), v: float = 0.1, s: float = 0.1) -> Result:
    probs = {"S": s, "V": v}
    return Result(
        "r", start, start + card.window, card.fs, start / card.fs, (start + card.window) / card.fs, card.name,
        card.version, card.classes, tuple(probs.get(c, 0.5) for c in card.classes),
        tuple(Interval(a, b, label, 0.9) for a, b, label in intervals), (),
        {"received": published - 0.01, "published": published, "sent": published - 0.02, "stream_t0": 0.0},
    )


def _hand_made(card) -> tuple[Collected, Beats]:
    """V beats at 1000 (found), 2000 (found by an interval starting exactly 150 ms later), 4000 (missed);
    a false V alarm on the N beat at 3000; the S beat at 5000 has an S interval 151 ms late (miss + false alarm)."""
    beats = Beats(np.array([1000, 2000, 3000, 4000, 5000]), np.array(["V", "V", "N", "V", "A"]))
    v = (1 + card.thresholds["V"]) / 2  # alarming for V whatever the shipped threshold
    results = [
        _result(card, 0, 100.5, [(980, 1020, "V")], v=v),
        _result(card, 360, 101.0, [(2000 + TOL, 2100, "V")], v=v),
        _result(card, 720, 101.5, [(2990, 3010, "V"), (5000 + TOL + 1, 5100, "S")], v=v),
        _result(card, 1080, 102.0, v=v),
        _result(card, 2880, 103.0),
    ]
    return collect_results("hand", card, results, beats, card.fs), beats


def test_scores_of_a_miss_a_false_alarm_and_the_150ms_edge_through_the_reconstruction(model_dir):
    card = load_card(model_dir)
    col, beats = _hand_made(card)
    out = col.output
    assert out.starts.tolist() == [0, 360, 720, 1080, 2880]
    assert out.first_seen.tolist() == [0, 360, 720, 720]
    scores = score_records([out], card, MARGIN)
    assert (scores["beat"]["V"]["se"], scores["beat"]["V"]["ppv"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (scores["beat"]["S"]["se"], scores["beat"]["S"]["ppv"]) == (0.0, 0.0)
    delay = scores["detection_delay_s"]["V"]  # beat 1000 first covered by window 0, beat 2000 by window 360
    assert (delay["n"], delay["max"], delay["p50"]) == (2, pytest.approx(1000 / 360), pytest.approx(680 / 360))
    assert scores["detection_delay_s"]["S"]["n"] == 0
    # the false V interval lit the N beat at 3000 in a window holding V beats; the late S one came from a
    # window with no S beat in view (the A beat at 5000 lies past its end)
    un = scores["unconfirmed"]
    assert (un["V"]["unconfirmed"], un["V"]["other_beat"], un["V"]["false_alarm"]) == (1, 1, 0)
    assert (un["S"]["unconfirmed"], un["S"]["false_alarm"]) == (1, 1)
    # one-to-one matching of interval centres (what bxb sees): the edge interval's centre is 76 samples off
    bounds = np.arange(0, 6001, 90)
    sent = np.full(len(bounds) - 1, 100.0)
    sent[1000 // 90] = 100.25
    at = beat_sent_at(bounds, sent, beats.samples)
    assert at[0] == 100.25 and at[1] == 100.0
    wall, stream = alarm_latencies(col, at, "V", TOL)
    assert wall.tolist() == pytest.approx([0.25, 1.0])  # published 100.5 and 101.0; beat 4000 never found
    assert stream.tolist() == pytest.approx([100.48 - 1000 / 360, 100.98 - 2000 / 360])
    g = grade_record(out, card, TOL, MARGIN)
    assert (g.grade_i, g.grade_ii, g.grade_iii) == (3, 1, 1)  # 1080: the N beat at 3000 is inside; 2880: 4000 missed


def test_summary_has_every_key_and_the_report_every_section_even_without_s_beats(model_dir, tmp_path):
    card = load_card(model_dir)
    col, beats = _hand_made(card)
    col.output.beat_aami[-1] = "N"  # no S beat at all now
    bounds = np.arange(0, 6001, 90)
    rec = LiveRecord(col, "r", card.fs, ("MLII",), ("MLII",), np.zeros(6000, np.float32),
                     beat_sent_at(bounds, np.full(len(bounds) - 1, 100.0), beats.samples), 6000 / card.fs, 5, 0)
    run = LiveRun([rec], card, 2.0, rec.seconds, {}, [], {"in_process": False}, EvalSettings())
    s = summarise(run)
    _check_keys(s)
    assert s["beat"]["S"]["beats"] == 0 and s["beat"]["S"]["se"] is None
    assert s["alarm_latency_s"]["max"] == pytest.approx(1.0) and s["alarm_latency_s"]["n"] == 2
    assert s["window"]["V"]["confusion"]["matrix"] == [[0, 0], [1, 4]]
    assert s["grade"]["I"] == pytest.approx(3 / 5)
    page = write_report(s, run, tmp_path).read_text()
    _check_sections(page)
    assert "no S beats" in page or "S: no beats" in page


def _check_keys(s: dict) -> None:
    for c in ("V", "S"):
        assert {"se", "ppv"} <= s["beat"][c].keys()
        for k in ("se", "ppv"):
            assert s["beat"][c][k] is None or 0.0 <= s["beat"][c][k] <= 1.0
    assert {"I", "II", "III"} <= s["grade"].keys()
    assert {"p50", "p95", "max"} <= s["alarm_latency_s"].keys()
    assert {"beat", "window", "grade", "alarm_latency_s", "realtime_factor", "records"} <= s.keys()
    assert {"from_5_min", "drops", "model", "wfdb_compare"} <= s.keys()
    json.dumps(s, allow_nan=False)


def _check_sections(page: str) -> None:
    for key, heading in SECTIONS:
        assert f"<section id='{key}'>" in page, key
    assert page.count("data:image/png;base64,") >= 5  # bars, latency, confusion, two strips


def test_evaluate_the_excerpt_end_to_end_and_agree_with_the_offline_path(model_dir, tmp_path):
    out_json, report, ann = tmp_path / "eval.json", tmp_path / "report", tmp_path / "wfdb"
    t0 = time.perf_counter()
    result = runner.invoke(app, ["evaluate", "--records", "excerpt", "--model", str(model_dir), "--json", str(out_json),
                                 "--report", str(report), "--also-write-wfdb", str(ann), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - t0 < 60
    s = json.loads(out_json.read_text())
    _check_keys(s)
    assert [r["record"] for r in s["records"]] == ["208", "232", "100"]
    assert s["drops"]["windows_missing"] == 0 and s["realtime_factor"] > 1
    assert all(r["windows"] == r["windows_expected"] == 1 + (108000 - 2000) // 360 for r in s["records"])
    _check_sections((report / "report.html").read_text())
    # the same scoring code on the offline path's output gives the same numbers
    model = load_model(model_dir)
    offline = score_records([run_record(model, load_record(n, excerpt_dir())) for n in ("208", "232", "100")],
                            model.card, MARGIN)
    for c in ("V", "S"):
        for k in ("beats", "intervals", "se", "ppv"):
            want = offline["beat"][c][k]
            assert s["beat"][c][k] == (None if want != want else pytest.approx(want)), (c, k)
    written = wfdb.rdann(str(ann / "208"), "sea")
    assert written.fs == 360
    assert len(written.sample) == sum(s["records"][0]["beat"][c]["intervals"] for c in ("V", "S"))


TWELVE = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _synthetic_record(directory: Path, fs: float = 250.0, seconds: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """12 leads at 250 Hz; lead II carries narrow N and wide, tall V complexes; the others are weaker copies."""
    n = int(seconds * fs)
    t = np.arange(n) / fs
    peaks = np.arange(0.5, seconds - 0.5, 0.8)
    kinds = np.where(np.arange(len(peaks)) % 5 == 3, "V", "N")
    ii = np.zeros(n)
    for p, k in zip(peaks, kinds):
        width, height = (0.045, -1.6) if k == "V" else (0.012, 1.2)
        ii += height * np.exp(-0.5 * ((t - p) / width) ** 2) + 0.15 * np.exp(-0.5 * ((t - p - 0.25) / 0.05) ** 2)
    ii += 0.02 * np.sin(2 * np.pi * 0.3 * t)
    gains = np.array([0.6, 1.0, 0.4, -0.8, 0.2, 0.7, -0.5, 0.3, 0.9, 1.1, 0.8, 0.6])
    sig = np.outer(ii, gains)
    wfdb.wrsamp("syn", fs=fs, units=["mV"] * 12, sig_name=list(TWELVE), p_signal=sig, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(directory))
    samples = np.round(peaks * fs).astype(np.int64)
    # a rhythm annotation between beats: not a beat, must not be counted
    ann_samples = np.concatenate([samples, [samples[2] + 10]])
    symbols = list(kinds) + ["+"]
    order = np.argsort(ann_samples, kind="stable")
    wfdb.wrann("syn", "atr", ann_samples[order], symbol=[symbols[i] for i in order],
               aux_note=["(N" if symbols[i] == "+" else "" for i in order], fs=fs, write_dir=str(directory))
    return samples, kinds


def test_a_synthetic_12_lead_250hz_record_flows_through_a_running_worker(model_dir, tmp_path):
    samples, kinds = _synthetic_record(tmp_path)
    w = Worker(model_dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", metrics_port=None)
    thread = w.start()
    try:
        run = evaluate(["syn"], tmp_path, model_dir, EvalSettings(), connect=(w.ingest_endpoint, w.publish_endpoint))
    finally:
        w.stop()
        thread.join(30)
    (rec,) = run.records
    card = run.card
    assert (rec.lead, rec.output.lead_fallback, rec.fs_in, rec.output.fs) == ("II", False, 250.0, card.fs)
    np.testing.assert_array_equal(rec.output.beat_samples, np.round(samples * card.fs / 250.0))
    # the worker's resampler holds back under a second at the end of a stream, which a live stream never flushes
    n = int(60 * card.fs)
    assert 1 + (n - int(card.fs) - card.window) // card.hop <= rec.windows_expected <= 1 + (n - card.window) // card.hop
    assert rec.windows_missing == 0
    assert rec.output.starts.tolist() == list(range(0, rec.windows_expected * card.hop, card.hop))
    s = summarise(run)
    row = s["records"][0]
    assert row["beats_by_class"] == {"N": int(np.sum(kinds == "N")), "V": int(np.sum(kinds == "V"))}
    assert row["lead_used"] == ("II,V1" if len(card.leads.leads) == 2 else "II")  # a chest slot takes V1, the first chest alias
    assert s["beat"]["V"]["beats"] == int(np.sum(kinds == "V")) and s["beat"]["S"]["beats"] == 0
    assert s["worker"]["in_process"] is False


class _SlowModel:
    """The real model behind a deliberate delay, so a flood of windows overflows a small worker queue."""

    def __init__(self, inner) -> None:
        self.inner, self.card, self.backend = inner, inner.card, inner.backend

    def infer(self, x, *stream):  # a stream-fused card's model also takes each window's stream RR reference
        time.sleep(0.05)
        return self.inner.infer(x, *stream)

    def infer_raw(self, x):
        time.sleep(0.05)
        return self.inner.infer_raw(x)


def test_windows_the_worker_drops_are_reported_not_scored_around(model_dir):
    model = _SlowModel(load_model(model_dir))
    w = Worker(model_dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", metrics_port=None, max_batch=8, max_queue=16, model=model)
    thread = w.start()
    try:
        rec = load_record("208", excerpt_dir())
        short = type(rec)(rec.name, rec.fs, rec.leads, rec.signal[:, : 120 * 360], Beats(rec.beats.samples[rec.beats.samples < 120 * 360], rec.beats.symbols[rec.beats.samples < 120 * 360]))
        run = run_live([short], w.card, w.ingest_endpoint, w.publish_endpoint, EvalSettings(max_outstanding=100_000),
                       lambda: drop_counts(w), w.batcher.idle)
    finally:
        w.stop()
        thread.join(30)
    s = summarise(run)
    lost = s["drops"]["worker"].get("queue_full", 0)
    assert lost > 0
    assert s["drops"]["windows_missing"] == lost == s["records"][0]["windows_missing"]
    assert s["records"][0]["windows"] == s["records"][0]["windows_expected"] - lost
