"""Bedside windows are cut and labelled the way the runtime sees them."""

import numpy as np

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


def test_augment_keeps_shape_and_normalisation():
    x = np.random.default_rng(0).normal(size=(4, 1, 2000)).astype(np.float32)
    out = augment(x, np.random.default_rng(1))
    assert out.shape == x.shape and not np.allclose(out, x)
    np.testing.assert_allclose(out.std(-1), 1, atol=1e-3)


def test_best_threshold_separates_clean_scores():
    truth = np.array([0, 0, 0, 1, 1], bool)
    t = best_threshold(truth, np.array([0.1, 0.2, 0.3, 0.8, 0.9]))
    assert 0.3 < t <= 0.8


def test_best_threshold_reaches_low_scores():
    truth = np.array([0, 0, 1, 1], bool)  # an averaged ensemble's probabilities can all sit below 0.05
    t = best_threshold(truth, np.array([0.01, 0.015, 0.03, 0.04]))
    assert 0.015 < t <= 0.03
