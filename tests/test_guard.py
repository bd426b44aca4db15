"""Guarded cross-fitting retrains exactly the members that fail on their own training records, and nothing else."""

import json

import numpy as np
import pytest
import torch

from stream_ecg.card import load_card
from stream_ecg.data import excerpt_dir
from trainer.bedside import BedsideConfig

FOLDS = (("208",), ("100",), ("232",))


@pytest.fixture
def tiny_run(tmp_path, tiny_model_dir, monkeypatch):
    """A really trained (one short epoch) cross-fitted run of the tiny model on three excerpt records, seeds 3, 4, 5."""
    import trainer.bedside as bedside
    from trainer.model import JointModelConfig
    from trainer.train import TrainConfig

    mcfg = JointModelConfig.from_dict(load_card(tiny_model_dir).model_config).to_dict()
    cfg = BedsideConfig(folds=FOLDS, model={k: mcfg[k] for k in ("seg_widths", "cls_widths", "mlp_hidden", "decimate")})
    ws = bedside.concat([bedside.record_windows(r, cfg, cfg.hop, excerpt_dir()) for r in ("208", "100", "232")])
    monkeypatch.setattr(bedside, "ds1_windows", lambda c, d=None: ws)
    tcfg = TrainConfig(epochs=1, batch_size=16, progress=False, select="last")
    bedside.train_bedside(cfg, tcfg, tmp_path / "run", excerpt_dir(), epoch_size=48, seeds=(3, 4, 5))
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"command": "trainer train --epoch-size 48"}))
    return tmp_path / "run", cfg, ws, tcfg


def _members(run):
    from trainer.train import load_checkpoint

    model, ckpt = load_checkpoint(run / "checkpoint.pt")
    return [m.state_dict() for m in model.members], ckpt


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_guard_retrains_only_failing_members_with_the_next_seeds(tiny_run, tiny_model_dir, monkeypatch):
    import trainer.guard as guard
    from trainer.bedside import train_member
    from trainer.guard import GuardConfig, guard_run
    from trainer.model import JointModelConfig

    run, cfg, ws, tcfg = tiny_run
    card = load_card(tiny_model_dir)
    checked = []
    by_seed = {104: 0.3, 204: 0.7, 304: 0.95}  # the retrained member 1: seed 104 still fails, 204 passes

    def fake_f1(outputs, card, margin, cls):
        checked.append([o.name for o in outputs])
        return by_seed[guard_seed[0]]

    guard_seed = [None]
    real_train = guard.train_member

    def spy_train(cfg_, tcfg_, mcfg_, ds1, fold, seed, epoch_size, **kw):
        guard_seed[0] = seed
        assert fold == ("100",) and epoch_size == 48
        return real_train(cfg_, tcfg_, mcfg_, ds1, fold, seed, epoch_size, **kw)

    monkeypatch.setattr(guard, "training_f1", fake_f1)
    monkeypatch.setattr(guard, "train_member", spy_train)
    report = guard_run(run, run.parent / "guarded", card, GuardConfig(min_f1=0.6), excerpt_dir(), scores=[0.9, 0.2, 0.6])
    rows = report["guard"]["members"]
    assert [r["passed"] for r in rows] == [True, False, True]  # 0.6 is at the cut, so it passes
    assert [t["seed"] for t in rows[1]["tries"]] == [104, 204] and report["seeds"] == [3, 204, 5]
    assert checked == [["208", "232"], ["208", "232"]]  # each try judged on its training records, never on 100

    before, _ = _members(run)
    after, ckpt = _members(run.parent / "guarded")
    assert _same(before[0], after[0]) and _same(before[2], after[2]) and not _same(before[1], after[1])
    # the replacement is what `trainer train` would have trained with seed 204, bit for bit
    mcfg = JointModelConfig.from_dict(ckpt["model_config"])
    assert _same(after[1], train_member(cfg, tcfg, mcfg, ws, ("100",), 204, 48)[0].model.state_dict())
    # and the kept members are what it trained: the seeds alone rebuild them
    assert _same(before[0], train_member(cfg, tcfg, mcfg, ws, ("208",), 3, 48)[0].model.state_dict())
    assert ckpt["bedside"]["seeds"] == [3, 204, 5] and ckpt["history"][1]["seed"] == 204
    assert set(ckpt["bedside"]["thresholds"]) == {"S", "V"} and ckpt["bedside"]["guard"]["members"][1]["kept_seed"] == 204
    metrics = json.loads((run.parent / "guarded" / "metrics.json").read_text())
    assert metrics["command"] == "trainer train --epoch-size 48" and metrics["seeds"] == [3, 204, 5]


def test_guard_keeps_the_best_try_on_training_records_when_all_fail(tiny_run, tiny_model_dir, monkeypatch):
    import trainer.guard as guard
    from trainer.guard import GuardConfig, guard_run

    run, *_ = tiny_run
    f1s = iter([0.3, 0.1])
    monkeypatch.setattr(guard, "training_f1", lambda *a: next(f1s))
    report = guard_run(run, run.parent / "g2", load_card(tiny_model_dir), GuardConfig(tries=2), excerpt_dir(), scores=[0.2, 0.9, 0.9])
    assert [t["seed"] for t in report["guard"]["members"][0]["tries"]] == [103, 203] and report["seeds"] == [103, 4, 5]
    # when no try beats the member it had, the member stays
    f1s = iter([0.1])
    report = guard_run(run, run.parent / "g3", load_card(tiny_model_dir), GuardConfig(tries=1), excerpt_dir(), scores=[0.9, 0.9, 0.2])
    assert report["seeds"] == [3, 4, 5] and not report["guard"]["members"][2]["passed"]
    assert all(_same(a, b) for a, b in zip(_members(run)[0], _members(run.parent / "g3")[0]))


def test_guard_refuses_what_it_cannot_judge(tiny_run, tiny_model_dir, tmp_path):
    import dataclasses

    from trainer.guard import GuardConfig, guard_run, scores_from_file

    run, *_ = tiny_run
    card = load_card(tiny_model_dir)
    from stream_ecg.card import sha256

    saved = {"run": str(run), "checkpoint_sha256": sha256(run / "checkpoint.pt"), "thresholds": card.thresholds,
             "interval_rule": card.interval_rule.to_dict(), "members": [{"beat": {"V": {"f1": f}}} for f in (0.9, 0.2, 0.8)]}
    (tmp_path / "check.json").write_text(json.dumps(saved))
    assert scores_from_file(tmp_path / "check.json", run, card, "V") == [0.9, 0.2, 0.8]
    for stale in ({**saved, "checkpoint_sha256": "0" * 64}, {k: v for k, v in saved.items() if k != "checkpoint_sha256"}):
        (tmp_path / "stale.json").write_text(json.dumps(stale))  # the same path retrained, or a check from before the sha
        with pytest.raises(ValueError, match="did not check the members now in"):
            scores_from_file(tmp_path / "stale.json", run, card, "V")
    other = dataclasses.replace(card, interval_rule=dataclasses.replace(card.interval_rule, premature=0.1))
    with pytest.raises(ValueError, match="another interval rule"):
        scores_from_file(tmp_path / "check.json", run, other, "V")
    with pytest.raises(ValueError, match="not"):
        scores_from_file(tmp_path / "check.json", tmp_path, card, "V")
    with pytest.raises(ValueError, match="2 member scores for 3"):
        guard_run(run, tmp_path / "x", card, GuardConfig(), excerpt_dir(), scores=[0.9, 0.9])
    with pytest.raises(ValueError, match="min_f1"):
        GuardConfig(min_f1=1.5)
    with pytest.raises(ValueError, match="class 'Q'"):
        guard_run(run, tmp_path / "x", card, GuardConfig(cls="Q"), excerpt_dir(), scores=[0.9] * 3)


def test_trainer_guard_command_copies_a_run_whose_members_all_pass(tiny_run, tmp_path, flat):
    from typer.testing import CliRunner

    from trainer.cli import _run_card, app
    from trainer.train import TrainConfig, TrainResult, load_checkpoint, save_checkpoint

    run, *_ = tiny_run
    model, ckpt = load_checkpoint(run / "checkpoint.pt")
    card = _run_card(ckpt)
    from stream_ecg.card import sha256

    saved = {"run": str(run), "checkpoint_sha256": sha256(run / "checkpoint.pt"), "thresholds": {**card.thresholds, "V": 0.65},
             "interval_rule": card.interval_rule.to_dict(),
             "members": [{"beat": {"V": {"f1": 0.8}}}] * 3}
    (tmp_path / "check.json").write_text(json.dumps(saved))
    args = ["guard", "--run", str(run), "--out", str(tmp_path / "g"), "--data", str(excerpt_dir()), "--thresholds", '{"V": 0.65}']
    result = CliRunner().invoke(app, [*args, "--scores", str(tmp_path / "check.json")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["seeds"] == [3, 4, 5]
    assert all(_same(a, b) for a, b in zip(_members(run)[0], _members(tmp_path / "g")[0]))
    result = CliRunner().invoke(app, [*args[:-2], "--scores", str(tmp_path / "check.json")])  # checked at another V threshold
    assert result.exit_code == 2 and "other thresholds" in flat(result.output)
    (tmp_path / "plain").mkdir()
    save_checkpoint(tmp_path / "plain" / "checkpoint.pt", TrainResult(model=model.members[0]), model.cfg, TrainConfig(),
                    extra={"bedside": {"bedside_config": BedsideConfig().to_dict()}})
    result = CliRunner().invoke(app, ["guard", "--run", str(tmp_path / "plain"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "not a cross-fitted run" in flat(result.output)


def test_a_model_readme_lists_each_seed_sets_steps_after_training():
    from pathlib import Path

    from trainer.ship import model_readme

    card = json.loads((Path(__file__).parents[1] / "edge_models/bedside-v7/card.json").read_text())
    card["training"] = {**card["training"], "trained_by": ["trainer train A", "trainer train B"],
                        "then_by": [["trainer fuse A", "trainer guard A"], []], "command": "trainer combine A,B"}
    text = model_readme(card)
    lines = [line for line in text.split("## Reproduce")[1].splitlines() if "`trainer " in line]
    assert lines[:4] == ["- train: `trainer train A`", "  - then: `trainer fuse A`", "  - then: `trainer guard A`",
                         "- train: `trainer train B`"]
    assert lines[4].startswith("- combine: `trainer combine A,B`")
    card["training"] = {**card["training"], "trained_by": [], "guarded_by": "trainer guard X"}
    assert "- members retrained by the guard: `trainer guard X`" in model_readme(card)
