"""The model folder contract: card validation, backends agreeing, mismatches refused, TensorRT honest."""

import json
import shutil

import numpy as np
import pytest

from stream_ecg.card import CardError, LeadContract, ModelCard, default_model_dir, load_card
from stream_ecg.data import excerpt_dir, load_record
from stream_ecg.dsp import DspConfig, preprocess, window_input
from stream_ecg.fusion import infer_windows
from stream_ecg.postprocess import new_reference, stream_rr_reference
from stream_ecg.infer import ONNX_FILE, BackendUnavailable, OnnxModel, cuda_problem, load_model, tensorrt_problem


def excerpt_windows(card, n=16):
    rec = load_record("208", excerpt_dir())
    idx, _ = card.leads.pick(rec.leads)
    sig = preprocess(rec.signal[idx], rec.fs, card.dsp)
    starts = np.arange(0, n * card.hop, card.hop)
    return window_input(np.stack([sig[:, s : s + card.window] for s in starts]), card.dsp, starts)


def test_card_validates_and_lists_checksums(tiny_model_dir):
    card = load_card(tiny_model_dir)
    assert card.fs == 360.0 and card.window == 2000 and card.hop == 360
    assert set(card.files) == {"model.onnx", "model.pt2"}
    assert card.abnormal == ("S", "V")


def test_onnx_and_torch_agree_on_bundled_windows(tiny_model_dir):
    onnx, torch_model = load_model(tiny_model_dir, "onnxruntime"), load_model(tiny_model_dir, "torch")
    x = excerpt_windows(onnx.card)
    p1, a1 = onnx.infer(x)
    p2, a2 = torch_model.infer(x)
    assert p1.shape == (16, 3) and a1.shape == (16, 2000)
    assert np.abs(p1 - p2).max() <= 1e-4 and np.abs(a1 - a2).max() <= 1e-4 * max(1.0, float(np.abs(a2).max()))


def test_tampered_weights_are_refused(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    with open(bad / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CardError, match="sha256"):
        load_model(bad)


def test_card_that_disagrees_with_the_model_is_refused(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    card = json.loads((bad / "card.json").read_text())
    card["window"] = 1000
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(BackendUnavailable, match="do not belong together"):
        load_model(bad)


def test_recard_ships_the_same_files_with_a_new_interval_rule(tiny_model_dir, tmp_path):
    from trainer.ship import model_readme, recard

    card = recard(tiny_model_dir, tmp_path / "snapped", "tiny-snap", "0.2.0", "trainer recard ...", {"snap": 72},
                  evaluate=False)
    new = load_card(tmp_path / "snapped")
    old = load_card(tiny_model_dir)
    assert new.files == old.files and new.interval_rule.snap == 72
    assert new.interval_rule.threshold == old.interval_rule.threshold
    assert card["derived_from"]["name"] == old.name and new.name == "tiny-snap"
    assert {"onnxruntime_batch1", "torch_batch32"} <= set(card["latency_ms"])
    model = load_model(tmp_path / "snapped")
    x = np.zeros((1, model.card.channels, model.card.window), np.float32)
    np.testing.assert_array_equal(model.infer(x)[0], load_model(tiny_model_dir).infer(x)[0])
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    with open(bad / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CardError, match="sha256"):
        recard(bad, tmp_path / "never", "x", "0", "", {"snap": 72}, evaluate=False)
    with pytest.raises(ValueError):
        recard(tiny_model_dir, tmp_path / "never2", "x", "0", "", {"snap": -1}, evaluate=False)
    stricter = recard(tiny_model_dir, tmp_path / "stricter", "x", "0", "", {}, evaluate=False, thresholds={"V": 0.9})
    assert stricter["thresholds"]["V"] == 0.9 and load_card(tmp_path / "stricter").thresholds["V"] == 0.9
    # the card (and so its README) tells thresholds chosen after training from the training run's own
    assert stricter["threshold_overrides"] == {"V": 0.9} and "threshold_overrides" not in card
    shipped = json.loads((default_model_dir() / "card.json").read_text())  # a card with every README field
    readme = model_readme({**shipped, "thresholds": {**shipped["thresholds"], "V": 0.9}, "threshold_overrides": {"V": 0.9}})
    run_line = next(line for line in readme.splitlines() if line.startswith("- thresholds ("))
    assert "'V'" not in run_line and "{'V': 0.9}" in readme
    with pytest.raises(ValueError, match="does not alarm"):
        recard(tiny_model_dir, tmp_path / "never3", "x", "0", "", {}, evaluate=False, thresholds={"N": 0.5})


def test_every_shipped_model_loads_with_its_checksums_and_ds2_keys():
    """Each folder in edge_models/ (not only the default) is one a user can pick with --model: its files match its
    card, and the card has the DS2 keys other tools read, as fractions."""
    root = default_model_dir().parent
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert default_model_dir() in folders
    for folder in folders:
        card = load_card(folder)  # raises on a missing file or a checksum mismatch
        assert card.name == folder.name and {"model.onnx", "model.pt2"} <= set(card.files)
        ds2 = json.loads((folder / "card.json").read_text())["metrics"]["ds2"]
        for c in card.abnormal:
            assert 0.0 <= ds2["beat"][c]["se"] <= 1.0 and 0.0 <= ds2["beat"][c]["ppv"] <= 1.0
            assert {"se", "precision", "auc"} <= set(ds2["window"][c])


def test_malformed_card_is_a_card_error(tmp_path):
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(CardError):
        load_card(tmp_path)
    with pytest.raises(CardError, match="no card.json"):
        load_card(tmp_path / "nowhere")


def test_lead_contract_picks_by_name_alias_and_fallback():
    c = LeadContract(leads=("MLII",), aliases={"MLII": ("II", "ECG1")}, fallback="first")
    assert c.pick(("V1", "MLII")) == ([1], False)  # record 114 stores MLII second
    assert c.pick(("I", "ii", "III")) == ([1], False)  # 12-lead: lead II by alias, any case
    assert c.pick(("ECG 1", "ECG 2")) == ([0], False)
    assert c.pick(("V5", "V2")) == ([0], True)  # records 102/104: served, flagged
    two = LeadContract(leads=("MLII", "chest"), aliases={"MLII": ("II",), "chest": ("V1", "V2", "V5")}, fallback="first")
    assert two.pick(("MLII", "V1")) == ([0, 1], False)
    assert two.pick(("V5", "MLII")) == ([1, 0], False)  # record 114
    assert two.pick(("V5", "V2")) == ([0, 1], True)  # 102/104: V5 stands in for MLII, so the chest slot takes V2
    assert two.pick(("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2")) == ([1, 6], False)
    assert two.pick(("ECG",)) == ([0, 0], True)  # one lead fills both slots, flagged
    with pytest.raises(CardError):
        LeadContract(leads=("MLII",), fallback="refuse").pick(("V5", "V2"))


@pytest.mark.skipif(tensorrt_problem() is None, reason="Torch-TensorRT can run here: the refusal path does not apply")
def test_tensorrt_without_cuda_says_why_and_names_the_onnx_route(tiny_model_dir):
    with pytest.raises(BackendUnavailable) as err:
        load_model(tiny_model_dir, "tensorrt")
    assert tensorrt_problem() in str(err.value)
    assert "trtexec --onnx=" in str(err.value) and "model.onnx" in str(err.value)


@pytest.mark.skipif(tensorrt_problem() is None, reason="Torch-TensorRT can run here: the refusal path does not apply")
def test_trainer_tensorrt_without_cuda_exits_2_naming_the_trtexec_route(tiny_model_dir, tmp_path):
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from trainer.cli import app

    res = CliRunner().invoke(app, ["tensorrt", "--model", str(tiny_model_dir), "--fp16", "--out", str(tmp_path / "m.ep")])
    assert res.exit_code == 2 and not (tmp_path / "m.ep").exists()
    assert f"trtexec --onnx={tiny_model_dir / 'model.onnx'}" in res.output and "--fp16" in res.output


@pytest.mark.cuda
@pytest.mark.skipif(tensorrt_problem() is not None, reason=f"needs Torch-TensorRT on an NVIDIA GPU: {tensorrt_problem()}")
def test_tensorrt_matches_onnx_on_gpu(tiny_model_dir):  # pragma: no cover - runs only where CUDA exists
    from stream_ecg.infer import TRT_MAX_BATCH

    trt, onnx = load_model(tiny_model_dir, "tensorrt"), load_model(tiny_model_dir, "onnxruntime")
    x = excerpt_windows(onnx.card, 8)
    assert np.abs(trt.infer(x)[0] - onnx.infer(x)[0]).max() <= 1e-3
    many = np.concatenate([x] * (TRT_MAX_BATCH // 8 + 1))  # more than one engine batch
    assert np.abs(trt.infer(many)[0] - onnx.infer(many)[0]).max() <= 1e-3


@pytest.mark.cuda
@pytest.mark.skipif(cuda_problem() is not None, reason="needs an NVIDIA GPU with CUDA")
def test_exported_program_runs_on_cuda(tiny_model_dir):  # pragma: no cover - runs only where CUDA exists
    """The .pt2 on a GPU (what the tensorrt backend starts from) gives the ONNX model's outputs."""
    from stream_ecg.infer import EXPORTED_FILE, TorchModel

    card = load_card(tiny_model_dir)
    x = excerpt_windows(card, 8)
    got = TorchModel(card, tiny_model_dir / EXPORTED_FILE, device="cuda").infer(x)
    want = OnnxModel(card, tiny_model_dir / ONNX_FILE).infer(x)
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= 1e-4  # fp32, TF32 off (strict_fp32)


def _shipped_dir():
    try:
        return default_model_dir()
    except CardError:
        pytest.skip("no model shipped in edge_models/ yet")


def test_shipped_network_rebuilds_from_its_folder():
    """trainer.export.deployable_from_folder: a shipped model's nn.Module, without its training run."""
    torch = pytest.importorskip("torch")
    from trainer.export import deployable_from_folder

    model_dir = _shipped_dir()
    card = load_card(model_dir)
    x = excerpt_windows(card, 8)
    want = OnnxModel(card, model_dir / ONNX_FILE).infer(x)  # the network's own outputs, before rhythm fusion
    with torch.no_grad():
        got = [t.numpy() for t in deployable_from_folder(model_dir)(torch.from_numpy(x))]
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= 1e-4


def test_fp16_program_keeps_the_attention_pooling_in_fp32(tiny_model_dir):
    """What a strongly typed TensorRT build compiles for --fp16: fp16 convolutions, fp32 sum of squares."""
    torch = pytest.importorskip("torch")
    from trainer.export import deployable_from_folder, op_dtypes, typed_program

    card = load_card(tiny_model_dir)
    net = deployable_from_folder(tiny_model_dir)
    half = typed_program(net, card.channels, card.window, fp16=True)
    assert set(op_dtypes(half, "conv1d")) == {torch.float16}
    assert set(op_dtypes(half, "square")) == set(op_dtypes(half, "sqrt")) == {torch.float32}
    assert set(op_dtypes(typed_program(net, card.channels, card.window), "conv1d")) == {torch.float32}
    x = excerpt_windows(card, 4)
    with torch.no_grad():
        got, want = half.module()(torch.from_numpy(x)), net(torch.from_numpy(x))
    assert got[0].dtype == torch.float32 and float((got[0] - want[0]).abs().max()) <= 1e-2


@pytest.mark.cuda
@pytest.mark.skipif(cuda_problem() is not None, reason="needs an NVIDIA GPU with CUDA")
def test_fp16_program_on_cuda_matches_fp32_on_real_windows():  # pragma: no cover - runs only where CUDA exists
    """The shipped model's fp16 program (pooling fp32) on a GPU against its fp32 network on the CPU."""
    import torch
    from torch.export.passes import move_to_device_pass

    from trainer.export import deployable_from_folder, typed_program

    model_dir = _shipped_dir()
    card = load_card(model_dir)
    net = deployable_from_folder(model_dir)
    x = excerpt_windows(card, 32)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
        half = move_to_device_pass(typed_program(net, card.channels, card.window, fp16=True), "cuda").module()
        got = half(torch.from_numpy(x).cuda())[0].cpu().numpy()
    assert np.isfinite(got).all() and np.abs(got - want).max() <= 1e-2


def test_shipped_default_model_is_consistent():
    model_dir = _shipped_dir()
    onnx, torch_model = load_model(model_dir, "onnxruntime"), load_model(model_dir, "torch")
    card = json.loads((model_dir / "card.json").read_text())
    for key in ("fs", "leads", "window", "hop", "classes", "files", "metrics"):
        assert key in card
    for cls in ("V", "S"):
        assert 0 <= card["metrics"]["ds2"]["beat"][cls]["se"] <= 1
    x = excerpt_windows(onnx.card)
    # the exported network: the bound, on its own outputs
    assert np.abs(onnx.inner.infer(x)[0] - torch_model.inner.infer(x)[0]).max() <= 1e-4
    # served probabilities: the rhythm fusion adds weight x prematurity to a logit of -10 to -7 (p ~ 1e-4), where the two
    # backends' fp32 logits differ by ~1e-3, and moves it to the sigmoid's steep middle (slope <= 1/4)
    starts = np.arange(len(x)) * onnx.card.hop  # a stream-fused card's fusion reads the stream's RR reference
    ref = stream_rr_reference(onnx.card, x, starts, new_reference(onnx.card))
    served, served_torch = infer_windows(onnx, x, ref)[0], infer_windows(torch_model, x, ref)[0]
    assert np.abs(served - served_torch).max() <= 5e-4
    for i, cls in enumerate(onnx.card.classes):  # every alarm is the same on both backends
        if cls in onnx.card.thresholds:
            thr = onnx.card.thresholds[cls]
            assert ((served[:, i] >= thr) == (served_torch[:, i] >= thr)).all(), cls


def test_two_lead_model_is_served_by_lead_name_and_from_a_one_lead_stream(two_lead_model_dir):
    import dataclasses

    from stream_ecg.offline import run_record

    model = load_model(two_lead_model_dir)
    rec = load_record("208", excerpt_dir())
    rec = dataclasses.replace(rec, signal=rec.signal[:, : 30 * 360])
    both = run_record(model, rec)
    assert both.probs.shape[1] == 3 and not both.lead_fallback
    swapped = run_record(model, dataclasses.replace(rec, leads=rec.leads[::-1], signal=rec.signal[::-1]))
    np.testing.assert_array_equal(swapped.probs, both.probs)  # picked by name, not position
    alone = run_record(model, dataclasses.replace(rec, leads=rec.leads[:1], signal=rec.signal[:1]))
    assert alone.lead_fallback and alone.probs.shape == both.probs.shape
    assert np.abs(alone.probs - both.probs).max() > 1e-6  # MLII in the chest slot: another input (random weights barely care)


def test_a_premature_interval_rule_states_its_limit_once(tiny_model_dir, tmp_path):
    from stream_ecg.intervals import IntervalRule
    from trainer.ship import (CONFIRM_LIMITS, KURTOSIS_LIMITS, LEFT_EDGE_LIMITS, P_WAVE_LIMITS, P_WAVE_LIMITS_FIRST_LEAD, PAUSE_LIMITS,
                              PREMATURE_LIMITS, REGULAR_LIMITS, REGULAR_STREAM_LIMITS, USUAL_LIMITS, recard, rule_limits)

    once = rule_limits("Limits.", IntervalRule(premature=0.1))
    assert once == "Limits." + PREMATURE_LIMITS and rule_limits(once, IntervalRule(premature=0.1)) == once
    assert rule_limits("Limits.", IntervalRule()) == "Limits."
    both = rule_limits("Limits.", IntervalRule(premature=0.1, regular=0.05))
    assert both == "Limits." + PREMATURE_LIMITS + REGULAR_LIMITS and rule_limits(both, IntervalRule(premature=0.1, regular=0.05)) == both
    stream = rule_limits(both, IntervalRule(premature=0.1, regular=0.05, regular_stream=0.1))
    assert stream == both + REGULAR_STREAM_LIMITS
    gated = rule_limits(both, IntervalRule(premature=0.1, regular=0.05, min_kurtosis=5.0))
    assert gated == both + KURTOSIS_LIMITS and rule_limits(gated, IntervalRule(premature=0.1, min_kurtosis=5.0)) == gated
    usual = IntervalRule(premature=0.1, premature_all=True, premature_usual=0.6)
    assert rule_limits("Limits.", usual) == "Limits." + PREMATURE_LIMITS + USUAL_LIMITS
    assert rule_limits(rule_limits("Limits.", usual), usual) == rule_limits("Limits.", usual)
    p_wave = IntervalRule(premature=0.1, premature_pause=0.2, min_p_consistency=0.4)
    assert rule_limits("Limits.", p_wave) == "Limits." + PREMATURE_LIMITS + PAUSE_LIMITS + P_WAVE_LIMITS
    assert rule_limits(rule_limits("Limits.", p_wave), p_wave) == rule_limits("Limits.", p_wave)
    shipped = json.loads((default_model_dir().parent / "bedside-v9.9" / "card.json").read_text())["limits"]
    assert P_WAVE_LIMITS_FIRST_LEAD in shipped  # a card shipped with the first-lead wording gets the new one, once
    assert rule_limits(shipped, p_wave).count("share one P wave") == 1 and P_WAVE_LIMITS in rule_limits(shipped, p_wave)
    edged = rule_limits("Limits.", IntervalRule(left_edge=300, confirm=2))
    assert edged == "Limits." + LEFT_EDGE_LIMITS + CONFIRM_LIMITS and rule_limits(edged, IntervalRule(left_edge=300, confirm=2)) == edged
    with pytest.raises(CardError, match="premature"):  # the tiny model has no rr_prev channel to read
        recard(tiny_model_dir, tmp_path / "never", "x", "0", "", {"premature": 0.1}, evaluate=False)


def test_the_default_cards_limits_name_the_leads_its_p_wave_gate_reads():
    """What a reader of the shipped card is told about the P-wave gate matches what the gate reads."""
    from trainer.ship import P_WAVE_LIMITS, P_WAVE_LIMITS_FIRST_LEAD

    card = json.loads((default_model_dir() / "card.json").read_text())
    if card["interval_rule"].get("min_p_consistency", 0) <= 0:
        pytest.skip("the default card has no P-wave gate")
    first = card["interval_rule"].get("p_wave_leads", "first") == "first"
    assert (P_WAVE_LIMITS_FIRST_LEAD if first else P_WAVE_LIMITS) in card["limits"]
    assert (P_WAVE_LIMITS if first else P_WAVE_LIMITS_FIRST_LEAD) not in card["limits"]


def test_a_stream_reference_replaces_the_window_median_sentence():
    from stream_ecg.intervals import IntervalRule
    from trainer.ship import PREMATURE_CONTEXT_LIMITS, PREMATURE_LIMITS, REGULAR_LIMITS, rule_limits

    window = rule_limits("Limits.", IntervalRule(premature=0.1, regular=0.05))  # a card recarded with the option
    stream = rule_limits(window, IntervalRule(premature=0.1, regular=0.05, premature_context=108000))
    assert stream == "Limits." + REGULAR_LIMITS + PREMATURE_CONTEXT_LIMITS
    assert rule_limits(stream, IntervalRule(premature=0.1, regular=0.05, premature_context=108000)) == stream
    assert PREMATURE_LIMITS not in stream
    card_wide = rule_limits(window, IntervalRule(premature=0.1, regular=0.05), stream_reference=True)  # "stream" card
    assert card_wide == stream
    back = rule_limits(stream, IntervalRule(premature=0.1, regular=0.05))  # recarded to the window's median again
    assert PREMATURE_CONTEXT_LIMITS not in back and PREMATURE_LIMITS in back


def test_recard_sets_the_prematurity_reference(fused_model_dir, tmp_path):
    from trainer.ship import model_readme, recard

    card = recard(fused_model_dir, tmp_path / "mean", "x", "0", "", {}, evaluate=False, reference="mean")
    assert load_card(tmp_path / "mean").prematurity_reference == "mean" and "mean" in card["prematurity_reference_rule"]
    shipped = json.loads((default_model_dir() / "card.json").read_text())  # a card with every README field
    fields = {k: card[k] for k in ("prematurity_reference", "prematurity_reference_rule")}
    assert "prematurity reference mean" in model_readme({**shipped, **fields})
    back = recard(tmp_path / "mean", tmp_path / "median", "x", "0", "", {}, evaluate=False, reference="median")
    assert "prematurity_reference" not in back and load_card(tmp_path / "median").prematurity_reference == "median"
    with pytest.raises(ValueError, match="reference"):
        recard(fused_model_dir, tmp_path / "never", "x", "0", "", {}, evaluate=False, reference="mode")


def test_unpack_rebuilds_the_shipped_members_as_a_cross_fitted_run(tmp_path):
    import torch

    from stream_ecg.card import ModelCard
    from trainer.bedside import BedsideConfig, fold_networks
    from trainer.export import deployable_from_folder
    from trainer.ship import card_from_run, unpack
    from stream_ecg.intervals import IntervalRule
    from trainer.train import load_checkpoint

    shipped = default_model_dir()
    raw = json.loads((shipped / "card.json").read_text())
    if not raw.get("training", {}).get("folds"):
        pytest.skip("the default model is not cross-fitted")
    unpack(shipped, tmp_path / "run")
    model, ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    cfg = BedsideConfig.from_dict(ckpt["bedside"]["bedside_config"])
    assert [list(f) for f in cfg.folds] == raw["training"]["folds"] and cfg.dsp == DspConfig.from_dict(raw["dsp"])
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, raw["model_config"]["in_leads"], raw["window"])).astype(np.float32))
    with torch.inference_mode():
        want = deployable_from_folder(shipped).model(x)[0]
        nets = [net for net, _ in fold_networks(model, cfg)]
        got = torch.stack([net(x)[0] for net in nets]).mean(0)  # the served ensemble: the mean of its members' logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    card = ModelCard.from_dict({**card_from_run(ckpt, "run", "0", ""), "files": {}})
    assert card.thresholds == raw["thresholds"] and card.interval_rule == IntervalRule.from_dict(raw["interval_rule"])
    assert card.rhythm_fusion == raw.get("rhythm_fusion", {})


def test_class_rules_label_each_class_under_its_own_card(tmp_path):
    """A card whose V intervals come from the default's rule publishes bedside-v9.8's S intervals and probabilities and
    the default's V intervals, from one network call per batch (the bundled excerpts: in 232 the two cards' S marks
    differ, in 208 their V marks)."""
    from stream_ecg.offline import run_record
    from trainer.ship import recard

    s_card, v_card = default_model_dir().parent / "bedside-v9.8", default_model_dir().parent / "bedside-v9.7"
    card = recard(s_card, tmp_path / "both", "both", "0", "", {}, evaluate=False, class_rules_from={"V": v_card})
    assert card["class_rules_from"] == {"V": {"name": "bedside-v9.7", "version": "9.7.0"}}
    both, s_model, v_model = load_model(tmp_path / "both"), load_model(s_card), load_model(v_card)
    marks = lambda out, c: [(iv.start, iv.end, round(iv.score, 6)) for iv in out.intervals if iv.label == c]
    for name, differ in (("232", "S"), ("208", "V")):
        rec = load_record(name, excerpt_dir())
        out, s_out, v_out = run_record(both, rec), run_record(s_model, rec), run_record(v_model, rec)
        assert marks(s_out, differ) != marks(v_out, differ)  # the record tells the two rules apart
        assert marks(out, "S") == marks(s_out, "S") and marks(out, "V") == marks(v_out, "V")
        np.testing.assert_array_equal(out.probs, s_out.probs)

    class Hidden:  # a wrapper that hides the network's outputs before the fusion
        card, backend, infer = both.card, both.backend, both.infer

    with pytest.raises(ValueError, match="infer_raw"):
        run_record(Hidden(), rec)
    from stream_ecg.worker import Worker

    with pytest.raises(ValueError, match="infer_raw"):  # the worker refuses it at start, before binding a socket
        Worker(tmp_path / "both", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", metrics_port=None, model=Hidden())


def test_class_rules_are_refused_when_the_card_cannot_serve_them(fused_model_dir, tmp_path, tiny_model_dir):
    from trainer.ship import recard

    d = json.loads((fused_model_dir / "card.json").read_text())
    rule = d["interval_rule"]
    for bad, why in (({"N": {"interval_rule": rule}}, "abnormal"),
                     ({"S": {"thresholds": {"S": 0.5}}}, "only"),
                     ({"S": {"prematurity_reference": "stream"}}, "stream RR reference"),
                     ({"S": {"prematurity_reference": "mean"}}, "published"),
                     ({"S": {"interval_rule": {**rule, "confirm": 2}}}, "one merger"),
                     ({"S": {"interval_rule": {**rule, "regular_stream": 0.1}}}, "irregularity")):
        with pytest.raises(CardError, match=why):
            ModelCard.from_dict({**d, "class_rules": bad})
    part = ModelCard.from_dict({**d, "class_rules": {"S": {"interval_rule": {**rule, "left_edge": 300}}}}).for_class("S")
    assert part.interval_rule.left_edge == 300 and part.class_rules == {}
    with pytest.raises(ValueError, match="other model files"):  # one network's outputs, re-labelled
        recard(fused_model_dir, tmp_path / "never", "x", "0", "", {}, evaluate=False,
               class_rules_from={"S": tiny_model_dir})
