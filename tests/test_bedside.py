"""Bedside windows are cut and labelled the way the runtime sees them."""

import json

import numpy as np
import pytest

from stream_ecg.data import excerpt_dir, load_record
from trainer.bedside import BedsideConfig, augment, balanced_p, best_threshold, record_windows


def test_excerpt_windows_and_labels():
    cfg = BedsideConfig()
    ws = record_windows("208", cfg, cfg.hop, excerpt_dir())
    rec = load_record("208", excerpt_dir())
    assert ws.x.shape == (1 + (rec.signal.shape[1] - 2000) // 360, 1, 2000)
    np.testing.assert_allclose(ws.x.mean(-1), 0, atol=1e-4)
    v = rec.beats.samples[rec.beats.aami() == "V"]
    for i in range(len(ws.start)):
        s = ws.start[i]
        core = np.any((v >= s + cfg.margin) & (v < s + 2000 - cfg.margin))
        assert bool(ws.y[i, 1]) == core
        if not core and np.any((v >= s) & (v < s + 2000)):
            assert ws.w[i, 1] == 0  # a V beat only in the margin: unknown, not negative
    assert ws.y[:, 1].mean() > 0.5  # 208's excerpt is rich in PVCs


def test_balanced_sampling_gives_each_group_a_third():
    y = np.zeros((100, 2), np.float32)
    y[:5, 0] = 1
    y[5:25, 1] = 1
    p = balanced_p(y)
    assert np.isclose(p[:5].sum(), 1 / 3) and np.isclose(p[5:25].sum(), 1 / 3) and np.isclose(p[25:].sum(), 1 / 3)


def test_record_balance_evens_records_within_each_group_and_keeps_the_thirds():
    y = np.zeros((100, 2), np.float32)
    y[:40, 0] = 1  # S windows: 36 from record a, 4 from record b
    record = np.array(["a"] * 36 + ["b"] * 4 + ["a"] * 30 + ["b"] * 30)
    as_drawn = balanced_p(y, record, 0.0)
    np.testing.assert_allclose(as_drawn, balanced_p(y))
    even = balanced_p(y, record, 1.0)
    assert np.isclose(even[:36].sum(), even[36:40].sum())  # each S record a sixth
    half = balanced_p(y, record, 0.5)
    assert np.isclose(half[:36].sum() / half[36:40].sum(), 3.0)  # sqrt(36) : sqrt(4)
    for p in (even, half):
        assert np.isclose(p[:40].sum(), 0.5) and np.isclose(p[40:].sum(), 0.5)  # no V windows: S and the rest halve it
    with pytest.raises(ValueError, match="record"):
        balanced_p(y, None, 0.5)


def test_augment_keeps_shape_and_normalisation():
    x = np.random.default_rng(0).normal(size=(4, 1, 2000)).astype(np.float32)
    out = augment(x, np.random.default_rng(1))
    assert out.shape == x.shape and not np.allclose(out, x)
    np.testing.assert_allclose(out.std(-1), 1, atol=1e-3)


def test_lead_dropout_zeroes_the_ecg_leads_of_a_share_of_windows_and_keeps_the_derived_channels():
    x = np.random.default_rng(0).normal(size=(400, 4, 500)).astype(np.float32)  # 2 leads + 2 derived channels
    out = augment(x, np.random.default_rng(1), leads=2, lead_dropout=0.25)
    dropped = ~out[:, :2].any(axis=(1, 2))
    assert 0.15 < dropped.mean() < 0.35
    np.testing.assert_array_equal(out[:, 2:], x[:, 2:])  # rhythm / residual untouched, dropped or not
    kept = augment(x, np.random.default_rng(1), leads=2)  # off: no window loses its leads
    assert kept[:, :2].any(axis=(1, 2)).all()


def test_best_threshold_separates_clean_scores():
    truth = np.array([0, 0, 0, 1, 1], bool)
    t = best_threshold(truth, np.array([0.1, 0.2, 0.3, 0.8, 0.9]))
    assert 0.3 < t <= 0.8


def test_best_threshold_reaches_low_scores():
    truth = np.array([0, 0, 1, 1], bool)  # an averaged ensemble's probabilities can all sit below 0.05
    t = best_threshold(truth, np.array([0.01, 0.015, 0.03, 0.04]))
    assert 0.015 < t <= 0.03


def test_best_threshold_reaches_scores_above_099():
    truth = np.array([0, 0, 1, 1], bool)  # a rhythm-fused S logit can put every window above 0.99
    t = best_threshold(truth, 1 / (1 + np.exp(-np.array([6.0, 7.0, 9.0, 10.0]))))
    assert 1 / (1 + np.exp(-7.0)) < t <= 1 / (1 + np.exp(-9.0))


def test_folds_partition_ds1():
    from stream_ecg.data.mitdb import DS1
    from trainer.bedside import FOLDS

    flat = [r for fold in FOLDS for r in fold]
    assert sorted(flat) == sorted(DS1) and len(flat) == len(set(flat))
    assert BedsideConfig(folds=FOLDS).validation == FOLDS and BedsideConfig().validation == (BedsideConfig().val_records,)


def test_every_fold_holds_s_and_v_beats():
    from stream_ecg.data import mitdb_dir
    from trainer.bedside import FOLDS

    if mitdb_dir(required=False) is None:
        import pytest

        pytest.skip("needs the MIT-BIH database")
    for fold in FOLDS:
        aami = np.concatenate([load_record(r).beats.aami() for r in fold])
        assert (aami == "S").sum() >= 90 and (aami == "V").sum() >= 400, fold  # a fold can rank both classes


def test_split_holds_records_out_and_validates_at_the_runtime_hop():
    from trainer.bedside import WindowSet, split

    n = 12
    ws = WindowSet(x=np.zeros((n, 1, 4), np.float32), y=np.zeros((n, 2), np.float32), w=np.ones((n, 2), np.float32),
                   record=np.array(["a"] * 6 + ["b"] * 6), start=np.tile(np.arange(6) * 180, 2))
    train, val = split(ws, ("b",), hop=360)
    assert set(train.record) == {"a"} and len(train.start) == 6
    assert set(val.record) == {"b"} and list(val.start) == [0, 360, 720]


def test_stretched_copies_train_only_and_never_validate():
    from trainer.bedside import WindowSet, split

    n = 16
    ws = WindowSet(x=np.zeros((n, 1, 4), np.float32), y=np.zeros((n, 2), np.float32), w=np.ones((n, 2), np.float32),
                   record=np.array(["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4), start=np.tile(np.arange(4) * 360, 4),
                   stretch=np.array([1.0] * 8 + [1.1] * 8, np.float32))
    train, val = split(ws, ("b",), hop=360)
    assert set(train.record) == {"a"} and sorted(set(train.stretch.tolist())) == [1.0, pytest.approx(1.1)]
    assert set(val.record) == {"b"} and set(val.stretch.tolist()) == {1.0} and len(val.start) == 4
    assert set(WindowSet(x=ws.x[:2], y=ws.y[:2], w=ws.w[:2], record=ws.record[:2], start=ws.start[:2]).stretch) == {1.0}


def test_a_stretched_record_keeps_its_beats_on_its_r_peaks():
    from stream_ecg.dsp import DspConfig, preprocess
    from stream_ecg.rhythm import r_peaks
    from trainer.bedside import stretched

    rec = load_record("100", excerpt_dir())
    for factor in (0.9, 1.1):
        slow = stretched(rec, factor)
        assert abs(slow.signal.shape[1] - factor * rec.signal.shape[1]) <= 1 and slow.fs == rec.fs
        assert np.array_equal(slow.beats.symbols, rec.beats.symbols)
        found = r_peaks(preprocess(slow.signal[:1], slow.fs, DspConfig())[0], slow.fs)
        ann = slow.beats.samples[(slow.beats.samples > 100) & (slow.beats.samples < slow.signal.shape[1] - 100)]
        assert (np.min(np.abs(ann[:, None] - found[None, :]), axis=1) <= 18).mean() > 0.98  # 50 ms
        rr = np.median(np.diff(slow.beats.samples)) / np.median(np.diff(rec.beats.samples))
        assert rr == pytest.approx(factor, abs=0.01)
    with pytest.raises(ValueError, match="stretch"):
        BedsideConfig(stretch=(1.0,))
    cfg = BedsideConfig(stretch=(0.9, 1.1))
    assert BedsideConfig.from_dict(cfg.to_dict()) == cfg


def test_cross_fitted_run_scores_each_record_with_the_member_that_held_it_out(tmp_path, tiny_model_dir):
    import torch

    from stream_ecg.card import load_card
    from stream_ecg.offline import run_record
    from trainer.model import JointEnsemble, JointModelConfig
    from trainer.train import TrainConfig, TrainResult, save_checkpoint
    from trainer.validation import CheckpointModel, held_out_outputs

    card = load_card(tiny_model_dir)
    mcfg = JointModelConfig.from_dict(card.model_config)
    torch.manual_seed(1)
    ens = JointEnsemble(mcfg, 2).eval()
    cfg = BedsideConfig(folds=(("208",), ("100",)))
    save_checkpoint(tmp_path / "checkpoint.pt", TrainResult(model=ens), mcfg, TrainConfig(), extra={"bedside": {"bedside_config": cfg.to_dict()}})
    outputs = held_out_outputs(tmp_path, card, excerpt_dir())
    assert [o.name for o in outputs] == ["208", "100"]
    for out, own, other in ((outputs[0], 0, 1), (outputs[1], 1, 0)):
        rec = load_record(out.name, excerpt_dir())
        np.testing.assert_allclose(out.probs, run_record(CheckpointModel(card, ens.members[own]), rec).probs, atol=1e-6)
        assert not np.allclose(out.probs, run_record(CheckpointModel(card, ens.members[other]), rec).probs, atol=1e-3)
    # a cache kept across calls (trainer validate's rules) gives the same outputs from one network pass
    cache: dict = {}
    first = held_out_outputs(tmp_path, card, excerpt_dir(), cache)
    filled = len(cache)
    again = held_out_outputs(tmp_path, card, excerpt_dir(), cache)
    assert filled > 0 and len(cache) == filled
    for a, b, c in zip(outputs, first, again):
        np.testing.assert_array_equal(a.probs, c.probs)
        np.testing.assert_array_equal(b.probs, c.probs)
        assert a.intervals == c.intervals
    # trainer validate: every threshold override with every rule, from one network pass
    from typer.testing import CliRunner

    from trainer.cli import app

    res = CliRunner().invoke(app, ["validate", "--run", str(tmp_path), "--model", str(tiny_model_dir), "--data",
                                   str(excerpt_dir()), "--rules", '[{}, {"snap": 72}]', "--thresholds", '[{}, {"V": 0.999}]'])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["by_rule"]
    assert [(r["thresholds"]["V"], r["interval_rule"]["snap"]) for r in rows] == [
        (card.thresholds["V"], 0), (card.thresholds["V"], 72), (0.999, 0), (0.999, 72)]
    assert set(rows[0]["records_unconfirmed"]) == {"208", "100"}
    from trainer.bedside import member_spread

    oof = member_spread(tmp_path / "checkpoint.pt", "VAL", excerpt_dir())["out_of_fold"]
    assert [(r["member"], r["record"]) for r in oof] == [(0, "208"), (1, "100")]
    assert oof[0]["V"]["positives"] > 0 and oof[1]["V"]["positives"] == 0 and oof[1]["V"]["auc"] is None


def test_causal_median_sees_only_the_past():
    from trainer.bedside import causal_median

    x = np.array([5.0, 1.0, 3.0, 100.0, 2.0])
    np.testing.assert_allclose(causal_median(x, 3), [5.0, 3.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(causal_median(x, 1), x)


def test_card_of_a_stream_context_run_names_its_inputs_and_limits():
    from stream_ecg.card import CardError, ModelCard
    from stream_ecg.dsp import DspConfig
    from trainer.ship import card_from_run

    cfg = BedsideConfig(dsp=DspConfig(rhythm=True, rhythm_context=256, rhythm_both=True))
    ckpt = {"bedside": {"bedside_config": cfg.to_dict(), "thresholds": {"S": 0.5, "V": 0.5}, "train_windows": 1,
                        "val_windows": 1, "train_seconds": 1.0, "best_epoch": 1},
            "model_config": {"pooling": "l2", "pool_kernel": 151, "in_leads": 5}, "train_config": {"seed": 0}}
    d = card_from_run(ckpt, "ctx", "0", "trainer train ...")
    assert d["inputs"] == ["MLII", "rr_prev", "rr_next", "rr_prev_window", "rr_next_window"]
    assert "stream's last 256 RR intervals" in d["rhythm"] and "stream's own recent median" in d["limits"]
    card = ModelCard.from_dict({**d, "files": {}})
    assert card.channels == 5 and card.dsp.new_history().rr.maxlen == 256
    with pytest.raises(CardError, match="5 input channels"):
        ModelCard.from_dict({**d, "files": {}, "model_config": {**d["model_config"], "in_leads": 3}})


def test_stream_prematurity_scores_the_window_with_an_early_beat_higher():
    from trainer.bedside import WindowSet, stream_prematurity

    t = np.arange(2000)
    def window(peaks):
        return sum(np.exp(-0.5 * ((t - p) / 4) ** 2) for p in peaks).astype(np.float32)[None]
    regular = [100 + 300 * k for k in range(7)]
    early = [100, 400, 700, 900, 1300, 1600, 1900]  # the beat at 900 comes 100 samples early
    x = np.stack([window(regular), window(regular), window(early)])
    ws = WindowSet(x=x, y=np.zeros((3, 2), np.float32), w=np.ones((3, 2), np.float32), record=np.full(3, "r"),
                   start=np.array([0, 2100, 4200]))
    score = stream_prematurity(ws, 360.0)
    assert abs(score[0]) < 0.05 and abs(score[1]) < 0.05
    assert score[2] == pytest.approx(-np.log(200 / 300), abs=0.05)


def test_two_lead_windows_take_the_chest_lead_by_name():
    from stream_ecg.dsp import DspConfig

    cfg = BedsideConfig(leads=("MLII", "chest"), dsp=DspConfig(rhythm=True))
    ws = record_windows("208", cfg, cfg.hop, excerpt_dir())
    assert ws.x.shape[1:] == (4, 2000)  # MLII, V1, two rhythm channels
    rec = load_record("208", excerpt_dir())
    assert rec.leads == ("MLII", "V1")
    one = record_windows("208", BedsideConfig(dsp=DspConfig(rhythm=True)), 360, excerpt_dir())
    np.testing.assert_allclose(ws.x[:, [0, 2, 3]], one.x, atol=1e-6)  # MLII and its rhythm are the one-lead model's
    assert not np.allclose(ws.x[:, 1], ws.x[:, 0], atol=0.1)
    assert BedsideConfig.from_dict(cfg.to_dict()).leads == ("MLII", "chest")
    assert BedsideConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "leads"}).leads == ("MLII",)


def test_augment_copies_the_first_lead_into_the_chest_slot_for_a_share_of_windows():
    x = np.random.default_rng(0).normal(size=(400, 4, 200)).astype(np.float32)
    out = augment(x, np.random.default_rng(1), leads=2, missing_p=0.25)
    same = np.array([np.allclose(o[1], o[0]) for o in out])
    assert 0.15 < same.mean() < 0.35
    np.testing.assert_array_equal(out[:, 2:], x[:, 2:])  # rhythm channels untouched
    assert not any(np.allclose(o[1], o[0]) for o in augment(x, np.random.default_rng(1), leads=2))


def test_card_of_a_two_lead_run_names_the_chest_slot():
    from stream_ecg.card import ModelCard
    from stream_ecg.dsp import DspConfig
    from trainer.ship import card_from_run

    cfg = BedsideConfig(dsp=DspConfig(rhythm=True), leads=("MLII", "chest"))
    ckpt = {"bedside": {"bedside_config": cfg.to_dict(), "thresholds": {"S": 0.5, "V": 0.5}, "train_windows": 1,
                        "val_windows": 1, "train_seconds": 1.0, "best_epoch": 1},
            "model_config": {"pooling": "l2", "pool_kernel": 151, "in_leads": 4}, "train_config": {"seed": 0}}
    d = card_from_run(ckpt, "two", "0", "trainer train ...")
    assert d["inputs"] == ["MLII", "chest", "rr_prev", "rr_next"] and d["lead_aliases"]["chest"][0] == "V1"
    assert "chest slot" in d["limits"] and "lead II (or the first lead) only" not in d["limits"]
    card = ModelCard.from_dict({**d, "files": {}})
    assert card.channels == 4 and card.leads.pick(("MLII", "V1")) == ([0, 1], False)


def test_member_check_scores_each_member_alone_on_the_records_it_trained_on(tmp_path, tiny_model_dir):
    import torch

    from stream_ecg.card import load_card
    from stream_ecg.offline import run_record
    from trainer.model import JointEnsemble, JointModelConfig
    from trainer.train import TrainConfig, TrainResult, save_checkpoint
    from trainer.validation import CheckpointModel, member_training_outputs

    card = load_card(tiny_model_dir)
    mcfg = JointModelConfig.from_dict(card.model_config)
    torch.manual_seed(2)
    ens = JointEnsemble(mcfg, 3).eval()
    cfg = BedsideConfig(folds=(("208",), ("100",), ("232",)))
    save_checkpoint(tmp_path / "checkpoint.pt", TrainResult(model=ens), mcfg, TrainConfig(), extra={"bedside": {"bedside_config": cfg.to_dict()}})
    members = member_training_outputs(tmp_path, card, excerpt_dir())
    assert [(k, [o.name for o in outs]) for k, outs in members] == [(0, ["100", "232"]), (1, ["208", "232"]), (2, ["208", "100"])]
    out = members[2][1][1]  # member 2 alone on 100, which it trained on
    own = run_record(CheckpointModel(card, ens.members[2]), load_record("100", excerpt_dir())).probs
    np.testing.assert_allclose(out.probs, own, atol=1e-6)
    assert not np.allclose(out.probs, run_record(CheckpointModel(card, ens.members[1]), load_record("100", excerpt_dir())).probs, atol=1e-3)


def _cross_fitted_run(folder, mcfg, cfg: BedsideConfig, seed: int, meta: dict | None = None):
    """An untrained cross-fitted run (one member per fold) saved as `trainer train --folds` saves one; returns its ensemble."""
    import torch

    from trainer.model import JointEnsemble
    from trainer.train import TrainConfig, TrainResult, save_checkpoint

    torch.manual_seed(seed)
    ensemble = JointEnsemble(mcfg, len(cfg.folds)).eval()
    folder.mkdir()
    save_checkpoint(folder / "checkpoint.pt", TrainResult(model=ensemble), mcfg, TrainConfig(),
                    extra={"bedside": {"bedside_config": cfg.to_dict(), **(meta or {})}})
    return ensemble


def test_held_out_averages_several_cross_fitted_runs_record_by_record(tmp_path, fused_model_dir):
    from stream_ecg.card import load_card
    from trainer.bedside import ensemble_size, held_out, record_windows
    from trainer.model import JointModelConfig
    from trainer.train import predict_logits

    from stream_ecg.dsp import DspConfig

    mcfg = JointModelConfig.from_dict(load_card(fused_model_dir).model_config)  # one lead + rhythm channels
    cfg = BedsideConfig(folds=(("208",), ("100",)), dsp=DspConfig(rhythm=True))
    runs = [_cross_fitted_run(tmp_path / f"r{seed}", mcfg, cfg, seed) for seed in (1, 2)]
    cks = [tmp_path / "r1" / "checkpoint.pt", tmp_path / "r2" / "checkpoint.pt"]
    ho = held_out(cks, excerpt_dir())
    assert ho.records == ("100", "208") and ho.fold == {"208": 0, "100": 1}
    ws = record_windows("100", cfg, cfg.hop, excerpt_dir())
    own = [predict_logits(r.members[1], ws.x)[0].numpy() for r in runs]  # 100 is held out by member 1
    np.testing.assert_allclose(ho.logits[1]["100"], own[1], atol=1e-6)
    y, s, rec = ho.pooled((0, 1), 1)
    np.testing.assert_allclose(s[rec == "100"], ((own[0] + own[1]) / 2)[ws.w[:, 1] > 0, 1], atol=1e-6)
    assert [b["k"] for b in ensemble_size(cks, excerpt_dir())["by_size"]] == [1, 2]
    _, s_plain, rec = ho.pooled((0, 1), 0)  # S with rhythm fusion: the same logits plus weight x prematurity
    _, s_fused, _ = ho.pooled((0, 1), 0, {"S": 5.0})
    known = np.concatenate([ho.w[r][:, 0] > 0 for r in ho.records])
    prem = np.concatenate([ho.prem[r] for r in ho.records])[known]
    assert prem.max() > 0.1  # 208's ventricular ectopy comes early
    np.testing.assert_allclose(s_fused - s_plain, 5.0 * prem, atol=1e-9)
    np.testing.assert_array_equal(ho.pooled((0, 1), 1, {"S": 5.0})[1], ho.pooled((0, 1), 1)[1])  # V untouched
    from stream_ecg.scoring import auc
    from trainer.bedside import fusion_gain

    y, s, rec = ho.pooled((0, 1), 0, {"S": 5.0})
    one = fusion_gain(cks, (5.0,), excerpt_dir(), group=("100",))
    assert one["rows"][-1]["auc_by_weight"]["5.0"] == pytest.approx(auc(y, s))
    assert one["rows"][-1]["group_auc_by_weight"]["5.0"] == pytest.approx(auc(y[rec == "100"], s[rec == "100"]), nan_ok=True)
    assert one["group_windows"] == int((rec == "100").sum()) > 0 and one["group_positives"] == int(y[rec == "100"].sum())
    every = fusion_gain(cks, (5.0,), excerpt_dir(), group=("100", "208"))["rows"][-1]  # the group is all: the same AUC
    assert every["group_auc_by_weight"] == pytest.approx(every["auc_by_weight"])


def test_threshold_transfer_shows_a_threshold_from_few_patients_failing_on_the_rest():
    from trainer.bedside import transfer

    rng = np.random.default_rng(0)
    recs, ys, ps = [], [], []
    for r, (lo, hi) in {"a": (0.02, 0.06), "b": (0.6, 0.9), "c": (0.6, 0.9), "d": (0.6, 0.9)}.items():
        y = np.arange(400) % 4 == 0  # a: the positives score low (a patient the model reads poorly); b-d: clean
        p = np.where(y, rng.uniform(lo, hi, 400), rng.uniform(0.0, 0.5 if r != "a" else 0.015, 400))
        recs.append(np.full(400, r)), ys.append(y), ps.append(p)
    rec, y, p = np.concatenate(recs), np.concatenate(ys), np.concatenate(ps)
    fold = np.searchsorted(["a", "b", "c", "d"], rec)
    t = transfer(y, p, fold, rec, ("a",))
    fixed = t["fixed_records"]
    assert fixed["on_the_rest"]["threshold"] < 0.05 < 0.5 <= fixed["best_for_the_rest"]["threshold"]
    assert fixed["on_the_rest"]["precision"] < 0.5 and fixed["best_for_the_rest"]["f1"] == pytest.approx(1.0)
    assert len(t["leave_one_fold_out"]["thresholds"]) == 4 and t["leave_one_fold_out"]["f1"] <= t["in_sample"]["f1"] + 1e-12


def test_training_refuses_a_bypass_that_would_pass_the_residual_unattended(tmp_path):
    """With the residual appended last, bypass=2 alone would bypass rr_next and the residual: refused
    before any data is read; attended_tail=1 keeps the residual under attention."""
    from stream_ecg.dsp import DspConfig
    from trainer.bedside import train_bedside
    from trainer.train import TrainConfig

    cfg = BedsideConfig(dsp=DspConfig(rhythm=True, beat_residual=True), model={"bypass": 2})
    with pytest.raises(ValueError, match=r"only rhythm channels .* may bypass"):
        train_bedside(cfg, TrainConfig(), tmp_path / "run", data_dir=tmp_path / "no-data")


def test_combined_seed_sets_score_each_record_with_the_mean_of_the_members_that_held_it_out(tmp_path, fused_model_dir):
    from stream_ecg.card import load_card
    from stream_ecg.dsp import DspConfig
    from trainer.bedside import combine_runs, held_out, record_windows
    from trainer.model import JointModelConfig
    from trainer.train import TrainConfig, TrainResult, load_checkpoint, predict_logits, save_checkpoint

    mcfg = JointModelConfig.from_dict(load_card(fused_model_dir).model_config)
    cfg = BedsideConfig(folds=(("208",), ("100",)), dsp=DspConfig(rhythm=True))
    runs = [_cross_fitted_run(tmp_path / f"r{seed}", mcfg, cfg, seed, {"seeds": [seed, seed + 10], "best_epoch": [3, 4],
                                                                         "train_seconds": 10.0 * seed}) for seed in (1, 2)]
    report = combine_runs([tmp_path / "r1", tmp_path / "r2"], tmp_path / "both", "trainer combine ...", excerpt_dir())
    assert report["seeds"] == [1, 11, 2, 12] and report["train_seconds"] == 30.0
    model, ckpt = load_checkpoint(tmp_path / "both" / "checkpoint.pt")
    assert ckpt["members"] == 4 and set(ckpt["bedside"]["thresholds"]) == {"S", "V"}
    ws = record_windows("100", cfg, cfg.hop, excerpt_dir())  # 100 is fold 1: member 1 of each run, members 1 and 3 combined
    own = [predict_logits(r.members[1], ws.x)[0].numpy() for r in runs]
    ho = held_out([tmp_path / "both" / "checkpoint.pt"], excerpt_dir())
    np.testing.assert_allclose(ho.logits[0]["100"], (own[0] + own[1]) / 2, atol=1e-5)
    assert not np.allclose(ho.logits[0]["100"], own[0], atol=1e-3)
    # the served model averages all four members
    np.testing.assert_allclose(predict_logits(model, ws.x)[0].numpy(),
                               np.mean([predict_logits(m, ws.x)[0].numpy() for r in runs for m in r.members], 0), atol=1e-5)
    # another recipe cannot be mixed in
    other = BedsideConfig(folds=cfg.folds, dsp=DspConfig(rhythm=True), lead_dropout=0.1)
    (tmp_path / "r3").mkdir()
    save_checkpoint(tmp_path / "r3" / "checkpoint.pt", TrainResult(model=runs[0]), mcfg, TrainConfig(),
                    extra={"bedside": {"bedside_config": other.to_dict(), "seeds": [0, 1], "best_epoch": [1, 1], "train_seconds": 1.0}})
    with pytest.raises(ValueError, match="another recipe"):
        combine_runs([tmp_path / "r1", tmp_path / "r3"], tmp_path / "bad", "", excerpt_dir())
    # fused runs combine when fused alike, and the whole keeps the fusion its thresholds were chosen with
    from trainer.bedside import fuse_run, pooled_thresholds

    for seed in (1, 2):
        fuse_run(tmp_path / f"r{seed}", 5.0, tmp_path / f"f{seed}", "", excerpt_dir())
    combine_runs([tmp_path / "f1", tmp_path / "f2"], tmp_path / "fboth", "", excerpt_dir())
    fused = load_checkpoint(tmp_path / "fboth" / "checkpoint.pt")[1]["bedside"]
    assert fused["fusion"] == {"S": 5.0} and "fused_from" not in fused
    want, _ = pooled_thresholds(held_out([tmp_path / "both" / "checkpoint.pt"], excerpt_dir()), {"S": 5.0})
    assert fused["thresholds"] == want
    fuse_run(tmp_path / "r2", 6.0, tmp_path / "f6", "", excerpt_dir())
    with pytest.raises(ValueError, match="fuses rhythm otherwise"):
        combine_runs([tmp_path / "f1", tmp_path / "f6"], tmp_path / "bad", "", excerpt_dir())
    with pytest.raises(ValueError, match="fuses rhythm otherwise"):
        combine_runs([tmp_path / "r1", tmp_path / "f2"], tmp_path / "bad", "", excerpt_dir())


def test_a_cross_fitted_student_member_learns_only_from_teachers_that_never_saw_its_fold(tmp_path, fused_model_dir, monkeypatch):
    import torch

    import trainer.bedside as bedside
    import trainer.train as train
    from stream_ecg.card import load_card
    from stream_ecg.dsp import DspConfig
    from trainer.model import JointEnsemble, JointModel, JointModelConfig
    from trainer.train import TrainConfig, TrainResult, save_checkpoint

    mcfg = JointModelConfig.from_dict(load_card(fused_model_dir).model_config)
    cfg = BedsideConfig(folds=(("208",), ("100",)), dsp=DspConfig(rhythm=True), model={k: mcfg.to_dict()[k] for k in (
        "seg_widths", "cls_widths", "decimate")})
    torch.manual_seed(0)
    teacher = JointEnsemble(mcfg, 4).eval()  # a combined run: member i held out fold i mod 2
    save_checkpoint(tmp_path / "teacher.pt", TrainResult(model=teacher), mcfg, TrainConfig(),
                    extra={"bedside": {"bedside_config": cfg.to_dict()}})
    ws = bedside.concat([bedside.record_windows(r, cfg, cfg.hop, excerpt_dir()) for r in ("208", "100")])
    monkeypatch.setattr(bedside, "ds1_windows", lambda c, d=None: ws)
    seen = []

    def fake_train(model_cfg, tcfg, tr, va, teacher=None, **kw):
        seen.append(teacher)
        return TrainResult(model=JointModel(model_cfg).eval(), best_epoch=0, seconds=0.0)

    monkeypatch.setattr(train, "train_model", fake_train)
    bedside.train_bedside(cfg, TrainConfig(epochs=1), tmp_path / "student", excerpt_dir(), seeds=(0, 1), teacher=tmp_path / "teacher.pt")
    x = torch.from_numpy(ws.x[:4])
    for k, got in enumerate(seen):  # fold k's teachers are members k and k + 2, never the ones that trained on fold k
        want = (teacher.members[k](x)[0] + teacher.members[k + 2](x)[0]) / 2
        torch.testing.assert_close(got(x)[0], want, atol=1e-5, rtol=0)


def test_prematurity_counts_s_beats_early_against_the_rr_around_them():
    from trainer.prematurity import rr_prev_relative, s_prematurity

    samples = np.arange(0, 20 * 400, 400)  # a steady 400-sample RR...
    samples[10] -= 100  # ...with one beat 25 % early (and the next one late)
    aami = np.array(["N"] * 20)
    aami[10] = "S"
    rel = rr_prev_relative(samples, 2000)
    assert rel[9] == pytest.approx(-0.25) and rel[10] == pytest.approx(0.25) and rel[0] == 0
    assert s_prematurity(samples, aami, 2000, 0.1) == {"beats": 20, "S": 1, "S_early": 1, "N": 19, "N_early": 0}
    ectopic = np.array(["S" if k % 4 else "N" for k in range(20)])  # most beats ectopic, at the steady rate
    assert s_prematurity(np.arange(0, 20 * 400, 400), ectopic, 2000, 0.1)["S_early"] == 0


def test_mean_reference_finds_ectopic_runs_between_pauses_that_the_median_misses():
    from trainer.prematurity import rr_prev_relative, s_prematurity

    # a slow sinus beat after each 700-sample pause, then two ectopic beats 250 samples apart (as in MIT-BIH 232)
    samples = np.cumsum([0] + [700, 250, 250] * 10)
    aami = np.array(["N"] + ["N", "S", "S"] * 10)
    median = s_prematurity(samples, aami, 3600, 0.1, "median")
    mean = s_prematurity(samples, aami, 3600, 0.1, "mean")
    assert median["S_early"] == 0  # the ectopic beats' own RR is the median
    assert mean["S_early"] == median["S"] == 20 and mean["N_early"] == 0  # the pauses lift the mean; N beats come late
    assert rr_prev_relative(samples, 3600, "mean")[1] == pytest.approx(250 / 400 - 1, abs=0.02)
    with pytest.raises(ValueError, match="reference"):
        rr_prev_relative(samples, 3600, "mode")


def test_stream_context_counts_a_run_early_against_the_rhythm_before_it():
    from trainer.prematurity import rr_prev_relative, s_prematurity

    # 20 beats at RR 400, then a run of 6 at RR 250: the run is its own window's median, not the stream's
    samples = np.cumsum([0] + [400] * 20 + [250] * 6)
    aami = np.array(["N"] * 21 + ["S"] * 6)
    assert s_prematurity(samples, aami, 2000, 0.1)["S_early"] < 6  # the window's median is mostly the run's
    stream = s_prematurity(samples, aami, 2000, 0.1, context=36000)
    assert stream["S_early"] == 6 and stream["N_early"] == 0
    rel = rr_prev_relative(samples, 2000, context=36000)
    assert np.all(rel[:8] == 0.0)  # under eight earlier RRs: unjudged
    assert rel[-1] == pytest.approx(250 / 400 - 1)  # the median of the RRs before it is still 400


def test_window_irregularity_tells_fibrillation_from_a_lone_early_beat():
    from trainer.prematurity import window_irregularity

    rng = np.random.default_rng(0)
    steady = np.arange(0, 20 * 400, 400)
    steady[5] -= 100  # one S beat 25 % early in a steady rhythm
    fibrillating = steady[-1] + np.cumsum(rng.integers(250, 550, 20))  # then every RR differs
    samples = np.concatenate([steady, fibrillating])
    aami = np.array(["N"] * len(samples))
    aami[5] = "S"
    rows = window_irregularity(samples, aami, np.array([0, fibrillating[0]]), np.array(["(N", "(AFIB"]), 2000, 400)
    with_s = [irr for fib, s, irr in rows if s and not fib]
    in_fib = [irr for fib, s, irr in rows if fib]
    assert with_s and max(with_s) < 0.01  # the early beat and its pause are set aside
    assert in_fib and np.median(in_fib) > 0.05
    assert window_irregularity(samples, aami, np.zeros(0, np.int64), np.zeros(0, object), 2000, 400)[0][0] is False


def test_fold_scores_pool_each_members_records_by_counts():
    from trainer.validation import fold_scores

    def rec(s, v):
        return {"S": s, "V": v}

    row = {"records_beat": {
        "a": rec({"se": 0.5, "ppv": 1.0, "beats": 2, "intervals": 1}, {"se": 1.0, "ppv": 0.5, "beats": 3, "intervals": 6}),
        "b": rec({"se": float("nan"), "ppv": 0.0, "beats": 0, "intervals": 2}, {"se": 0.0, "ppv": float("nan"), "beats": 1, "intervals": 0}),
        "c": rec({"se": None, "ppv": None, "beats": 0, "intervals": 0}, {"se": 0.1, "ppv": 0.05, "beats": 10, "intervals": 20})}}
    one, two = fold_scores(row, [["a", "b"], ["c"]], seeds=[4, 7])
    assert one["seed"] == 4 and one["V"]["se"] == 3 / 4 and one["V"]["ppv"] == 3 / 6  # pooled by counts, not averaged
    assert one["S"]["se"] == 1 / 2 and one["S"]["ppv"] == 1 / 3 and one["S"]["intervals"] == 3
    assert two["S"]["se"] is None and two["S"]["f1"] is None and two["S"]["ppv"] is None  # no S beat, no S interval
    assert abs(two["V"]["f1"] - 2 * 0.1 * 0.05 / 0.15) < 1e-12  # the failed member stands out
    with pytest.raises(ValueError, match="fold 1"):
        fold_scores(row, [["a"], ["zzz"]])


def test_record_changes_counts_records_a_change_helped_or_hurt():
    from trainer.validation import record_changes

    def row(v_a, v_b):
        return {"records_beat": {
            "a": {"S": {"se": 0.5, "ppv": 0.5, "beats": 2, "intervals": 2}, "V": v_a},
            "b": {"S": {"se": float("nan"), "ppv": 0.0, "beats": 0, "intervals": 3}, "V": v_b}}}

    base = row({"se": 0.5, "ppv": 0.5, "beats": 4, "intervals": 4}, {"se": 1.0, "ppv": 1.0, "beats": 1, "intervals": 1})
    new = row({"se": 1.0, "ppv": 0.8, "beats": 4, "intervals": 5}, {"se": 0.0, "ppv": float("nan"), "beats": 1, "intervals": 0})
    out = record_changes(base, new)
    assert out["V"]["records_up"] == ["a"] and out["V"]["records_down"] == ["b"]  # b lost its one interval: F1 0
    assert out["S"] == {"up": 0, "down": 0, "same": 1, "records_up": [], "records_down": []}  # b has no S beat: left out


def test_beat_summary_gives_the_mean_beat_f1_the_rules_compare():
    from pathlib import Path

    from typer.testing import CliRunner

    from trainer.cli import app
    from trainer.validation import beat_summary

    row = {"thresholds": {"V": 0.5}, "beat": {"S": {"se": 0.5, "ppv": 0.5}, "V": {"se": 1.0, "ppv": 0.5}}}
    got = beat_summary(row)
    assert got["beat"]["V"]["f1"] == pytest.approx(2 / 3) and got["mean_beat_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert beat_summary({**row, "beat": {**row["beat"], "S": {"se": 0.0, "ppv": 0.0}}})["beat"]["S"]["f1"] == 0.0
    # the committed V-threshold grid of bedside-v7's run reads as docs/results_notes.md quotes it (0.5219 at V 0.65)
    f = Path(__file__).parents[1] / "docs/results/validate_v_threshold_stretch_4567.json"
    result = CliRunner().invoke(app, ["summary", "--files", str(f)])
    assert result.exit_code == 0, result.output
    assert round(json.loads(result.output)["files"][str(f)][1]["mean_beat_f1"], 4) == 0.5219


def test_records_cut_in_worker_processes_equal_the_serial_cut():
    import dataclasses

    from stream_ecg.dsp import DspConfig
    from trainer.bedside import windows_of

    cfg = BedsideConfig(dsp=DspConfig(rhythm=True), leads=("MLII", "chest"))
    jobs = [("208", 360, 1.0), ("100", 360, 1.0), ("208", 720, 1.1)]
    serial, parallel = windows_of(jobs, cfg, excerpt_dir(), workers=1), windows_of(jobs, cfg, excerpt_dir(), workers=2)
    assert [p.record[0] for p in parallel] == ["208", "100", "208"] and parallel[2].stretch[0] == np.float32(1.1)
    for a, b in zip(serial, parallel):
        for f in dataclasses.fields(a):
            np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
