"""The joint model's parts behave as the method describes, for any lead count and length."""

import numpy as np
import pytest
import torch

from trainer.model import AttentionPooling, JointModel, JointModelConfig, count_flops
from trainer.train import TrainConfig, class_weights, predict, train_model

SMALL = dict(seg_widths=(4, 8), cls_widths=(4, 8, 8, 8), mlp_hidden=16)


@pytest.mark.parametrize("method", ["classifier_only", "cascaded", "relu_max", "l2"])
@pytest.mark.parametrize("leads,length", [(1, 2000), (2, 1999), (12, 777)])
def test_every_method_any_leads_and_length(method, leads, length):
    cfg = JointModelConfig.for_method(method, in_leads=leads, n_classes=3, **SMALL)
    logits, a = JointModel(cfg).eval()(torch.randn(3, leads, length))
    assert logits.shape == (3, 3)
    assert a.shape == (3, 1, length)
    assert torch.isfinite(logits).all() and torch.isfinite(a).all()


def test_l2_pooling_is_sqrt_of_zero_padded_windowed_sum_of_squares():
    s = torch.randn(2, 1, 300, dtype=torch.float64)
    k = 31
    got = AttentionPooling("l2", k)(s).numpy()[:, 0]
    sq = np.pad(s.numpy()[:, 0] ** 2, ((0, 0), (k // 2, k // 2)))
    want = np.sqrt(np.stack([np.convolve(row, np.ones(k), mode="valid") for row in sq]) + 1e-8)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_relu_max_pooling():
    s = torch.tensor([[[-1.0, 0.0, 3.0, 0.0, -2.0, 0.0, 0.0, 1.0]]])
    got = AttentionPooling("relu_max", 3)(s)[0, 0].tolist()
    assert got == [0.0, 3.0, 3.0, 3.0, 0.0, 0.0, 1.0, 1.0]


def _classifier_input_with_no_attention(cfg: JointModelConfig, x: torch.Tensor) -> torch.Tensor:
    """What the classifier receives when the segmenter's head is zeroed (A ~ 0 everywhere)."""
    model = JointModel(cfg).eval()
    seen = {}
    model.classifier.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    with torch.no_grad():
        model.segmenter.head.weight.zero_()
        model.segmenter.head.bias.zero_()
        model(x)
    return seen["x"]


def test_attention_multiplies_the_input():
    """X = A * D: zeroing the segmenter output zeroes what the classifier sees."""
    seen = _classifier_input_with_no_attention(JointModelConfig.for_method("l2", **SMALL), torch.randn(2, 2, 500))
    assert float(seen.abs().max()) < 1e-3


def test_bypassed_channels_reach_the_classifier_unattended():
    """With bypass, the trailing (rhythm) channels pass as they are; the leads stay A * D."""
    x = torch.randn(2, 4, 500)
    seen = _classifier_input_with_no_attention(JointModelConfig.for_method("l2", in_leads=4, bypass=2, **SMALL), x)
    assert float(seen[:, :2].abs().max()) < 1e-3
    torch.testing.assert_close(seen[:, 2:], x[:, 2:])
    with pytest.raises(ValueError, match="bypass"):
        JointModelConfig(in_leads=2, bypass=2)


def test_attended_tail_keeps_the_residual_under_attention_behind_the_bypass():
    """bypass=2, attended_tail=1 on leads, rr_prev, rr_next, residual: only the two rhythm channels pass as they are."""
    x = torch.randn(2, 5, 500)
    cfg = JointModelConfig.for_method("l2", in_leads=5, bypass=2, attended_tail=1, **SMALL)
    seen = _classifier_input_with_no_attention(cfg, x)
    assert float(seen[:, [0, 1, 4]].abs().max()) < 1e-3
    torch.testing.assert_close(seen[:, 2:4], x[:, 2:4])
    with pytest.raises(ValueError, match="attended_tail"):
        JointModelConfig(in_leads=5, attended_tail=1)
    with pytest.raises(ValueError, match="attended_tail"):
        JointModelConfig(in_leads=4, bypass=2, attended_tail=2)


def test_paper_size_configuration_is_about_1_2_gflop():
    flops = count_flops(JointModelConfig.paper_size(), 2000)
    assert 1.0e9 < flops < 1.5e9
    assert count_flops(JointModelConfig(), 2000) < flops / 4


def test_config_round_trip_and_odd_kernel():
    cfg = JointModelConfig.for_method("relu_max", pool_kernel=201)
    assert JointModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        JointModelConfig(pool_kernel=150)
    with pytest.raises(ValueError):
        JointModelConfig.for_method("transformer")


def test_class_weights_balance_classes():
    w = class_weights(np.array([0] * 90 + [1] * 10), 2)
    assert w[1] / w[0] == pytest.approx(9.0)


def _toy(n, rng):
    """Class 1 windows carry one wide bump somewhere; class 0 windows are noise only."""
    x = rng.normal(0, 0.3, (n, 1, 256)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y == 1):
        c = rng.integers(40, 216)
        x[i, 0, c - 15 : c + 15] += 3.0
    return x, y


def test_training_learns_and_is_repeatable():
    rng = np.random.default_rng(0)
    tr, va = _toy(256, rng), _toy(64, rng)
    cfg = JointModelConfig.for_method("l2", in_leads=1, pool_kernel=31, **SMALL)
    tcfg = TrainConfig(epochs=6, batch_size=32, lr=1e-2, patience=6, seed=1, threads=1, progress=False)
    a = train_model(cfg, tcfg, tr, va)
    b = train_model(cfg, tcfg, tr, va)
    probs, maps = predict(a.model, va[0])
    assert (probs.argmax(1) == va[1]).mean() > 0.9
    assert maps.shape == (64, 256)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key


def test_select_last_trains_the_whole_schedule_and_keeps_the_end():
    rng = np.random.default_rng(0)
    tr = _toy(64, rng)
    va = (tr[0][:16], 1 - tr[1][:16])  # labels flipped: validation only gets worse, "best" would stop early
    cfg = JointModelConfig.for_method("l2", in_leads=1, pool_kernel=31, **SMALL)
    base = dict(epochs=5, batch_size=16, lr=1e-2, patience=1, seed=0, threads=1, progress=False)
    last = train_model(cfg, TrainConfig(**base, select="last"), tr, va)
    assert last.best_epoch == 5 and len(last.history) == 5
    best = train_model(cfg, TrainConfig(**base), tr, va)
    assert len(best.history) < 5 and best.best_epoch < 5
    with pytest.raises(ValueError):
        TrainConfig(select="median")


def test_scoring_validation_less_often_keeps_the_weights():
    """`val_every` only saves time: the eval-mode passes it skips draw no random numbers and touch no BatchNorm
    statistics, so the trained weights are the same bit for bit."""
    rng = np.random.default_rng(1)
    tr = _toy(64, rng)
    va = (tr[0][:16], tr[1][:16])
    cfg = JointModelConfig.for_method("l2", in_leads=1, pool_kernel=31, **SMALL)
    base = dict(epochs=5, batch_size=16, lr=1e-2, seed=0, threads=1, progress=False, select="last")
    every = train_model(cfg, TrainConfig(**base), tr, va)
    sparse = train_model(cfg, TrainConfig(**base, val_every=3), tr, va)
    for key, value in every.model.state_dict().items():
        assert torch.equal(value, sparse.model.state_dict()[key]), key
    assert [("val_loss" in h) for h in sparse.history] == [False, False, True, False, True]
    assert sparse.history[-1]["val_loss"] == every.history[-1]["val_loss"]
    with pytest.raises(ValueError, match="select='last'"):
        TrainConfig(val_every=2)  # select="best" picks its epoch by the scores it would skip


def test_ensemble_averages_members_and_round_trips_through_a_checkpoint(tmp_path):
    from trainer.model import JointEnsemble
    from trainer.train import TrainResult, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    cfg = JointModelConfig(in_leads=3, n_classes=2, **SMALL)
    ens = JointEnsemble(cfg, 3).eval()
    x = torch.randn(2, 3, 500)
    logits, a = ens(x)
    outs = [m(x) for m in ens.members]
    torch.testing.assert_close(logits, sum(o[0] for o in outs) / 3)
    torch.testing.assert_close(a, sum(o[1] for o in outs) / 3)
    assert not torch.allclose(outs[0][0], outs[1][0])  # members differ, so the average is not trivial
    save_checkpoint(tmp_path / "c.pt", TrainResult(model=ens), cfg, TrainConfig())
    back, ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["members"] == 3 and isinstance(back, JointEnsemble)
    torch.testing.assert_close(back(x)[0], logits)


def test_a_student_learns_what_its_teacher_says():
    from trainer.train import MultiLabelObjective, predict_logits

    class Teacher(torch.nn.Module):
        """Says class 0 is present wherever the window holds a bump; the labels say nothing is."""

        def forward(self, x):
            bump = (x.abs().amax(dim=(1, 2)) > 2.0).float()
            return torch.stack([10 * bump - 5, torch.full_like(bump, -5.0)], 1), x[:, :1]

    rng = np.random.default_rng(0)
    x, has_bump = _toy(256, rng)
    y, w = np.zeros((256, 2), np.float32), np.ones((256, 2), np.float32)
    cfg = JointModelConfig.for_method("l2", in_leads=1, n_classes=2, pool_kernel=31, **SMALL)
    tcfg = TrainConfig(epochs=8, batch_size=32, lr=1e-2, seed=0, threads=1, progress=False, select="last")
    plain = train_model(cfg, tcfg, (x, y), (x[:64], y[:64]), objective=MultiLabelObjective(y, w, y[:64], w[:64]))
    student = train_model(cfg, tcfg, (x, y), (x[:64], y[:64]), objective=MultiLabelObjective(y, w, y[:64], w[:64]),
                          teacher=Teacher(), distill=1.0)
    p_plain = torch.sigmoid(predict_logits(plain.model, x[:64])[0][:, 0]).numpy()
    p_student = torch.sigmoid(predict_logits(student.model, x[:64])[0][:, 0]).numpy()
    bump = has_bump[:64] == 1
    assert p_plain.max() < 0.5  # from the labels alone: never present
    assert p_student[bump].mean() > 0.7 and p_student[~bump].mean() < 0.3, (p_student[bump].mean(), p_student[~bump].mean())
