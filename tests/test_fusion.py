"""Rhythm fusion: the window's shortest RR over its reference raises the S logit, the same in every path."""

import json

import numpy as np
import pytest

from stream_ecg.card import CardError, ModelCard, load_card
from stream_ecg.fusion import FusedModel, fuse, rr_prematurity
from stream_ecg.infer import load_model
from stream_ecg.rhythm import rr_channels


def _windows_with_an_early_beat() -> np.ndarray:
    """Two 1-lead windows with rhythm channels: regular beats, and the same with beat 4 coming 30 % early."""
    x = np.zeros((2, 3, 2000), np.float32)
    for i, early in enumerate((0, 90)):
        peaks = np.arange(100, 2000, 300)
        peaks[4] -= early
        lead = np.zeros(2000)
        lead[peaks] = 1.0
        x[i, 0] = lead
        x[i, 1:] = rr_channels(lead, 360.0, None, peaks)
    return x


def test_prematurity_is_the_shortest_rr_over_the_reference():
    prem = rr_prematurity(_windows_with_an_early_beat(), 1)
    assert prem[0] == pytest.approx(0.0, abs=1e-6)
    assert prem[1] == pytest.approx(-np.log(210 / 300), rel=1e-3)  # median RR stays 300


def _card(tiny_model_dir, fusion) -> ModelCard:
    """The tiny model's card, one lead with rhythm channels, with `fusion` (no weights are loaded from it)."""
    raw = json.loads((tiny_model_dir / "card.json").read_text())
    return ModelCard.from_dict({**raw, "dsp": {**raw["dsp"], "rhythm": True}, "rhythm_fusion": fusion,
                                "model_config": {**raw["model_config"], "in_leads": 3}})


def test_fuse_raises_only_the_fused_class_and_keeps_normal_consistent(tiny_model_dir):
    card = _card(tiny_model_dir, {"S": 20.0})
    x = _windows_with_an_early_beat()
    probs = np.array([[0.72, 0.1, 0.2], [0.72, 0.1, 0.2]], np.float32)
    out = fuse(card, x, probs)
    np.testing.assert_allclose(out[0], probs[0], atol=1e-6)  # no early beat: unchanged
    logit = np.log(out[1, 1] / (1 - out[1, 1]))
    assert logit == pytest.approx(np.log(0.1 / 0.9) + 20 * -np.log(210 / 300), rel=1e-3)
    assert out[1, 2] == pytest.approx(0.2, rel=1e-6) and out[1, 0] == pytest.approx((1 - out[1, 1]) * 0.8, rel=1e-5)
    assert fuse(_card(tiny_model_dir, {}), x, probs) is probs


def test_card_refuses_a_fusion_it_cannot_compute(tiny_model_dir):
    raw = json.loads((tiny_model_dir / "card.json").read_text())
    with pytest.raises(CardError, match="rhythm_fusion"):
        ModelCard.from_dict({**raw, "rhythm_fusion": {"S": 5.0}})  # the tiny model has no rhythm channels
    with pytest.raises(CardError, match="rhythm_fusion"):
        _card(tiny_model_dir, {"normal": 5.0})


def test_a_fused_model_folder_serves_fused_probabilities_on_every_path(fused_model_dir, tmp_path):
    from stream_ecg.data import excerpt_dir, load_record
    from stream_ecg.offline import run_record

    model_dir = fused_model_dir
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    for f in model_dir.iterdir():  # the same weights, the card without the fusion
        (plain_dir / f.name).write_bytes(f.read_bytes())
    raw = json.loads((model_dir / "card.json").read_text())
    del raw["rhythm_fusion"]
    (plain_dir / "card.json").write_text(json.dumps(raw))
    for backend in ("onnxruntime", "torch"):
        model = load_model(model_dir, backend)
        assert isinstance(model, FusedModel) and not isinstance(load_model(plain_dir, backend), FusedModel)
    model, plain = load_model(model_dir), load_model(plain_dir)
    x = _windows_with_an_early_beat()
    fused, _ = model.infer(x)
    np.testing.assert_allclose(fused, fuse(model.card, x, plain.infer(x)[0]), atol=1e-6)
    assert fused[1, 1] > plain.infer(x)[0][1, 1]
    rec = load_record("232", excerpt_dir())  # the offline (= live) path calls the fused model too
    out_fused, out_plain = run_record(model, rec), run_record(plain, rec)
    assert np.all(out_fused.probs[:, 1] >= out_plain.probs[:, 1] - 1e-6) and np.any(out_fused.probs[:, 1] > out_plain.probs[:, 1] + 1e-3)
    np.testing.assert_allclose(out_fused.probs[:, 2], out_plain.probs[:, 2], atol=1e-6)


def test_prematurity_stays_finite_on_inputs_no_rhythm_channel_can_hold():
    x = np.zeros((3, 2, 50), np.float32)
    x[0, 1, 3] = -5.0  # beyond the channel's clip range
    x[1, 1, 7] = np.nan
    x[2, 1] = -0.3
    prem = rr_prematurity(x, 1)
    assert np.all(np.isfinite(prem)) and prem[1] == 0.0 and prem[2] == pytest.approx(-np.log(0.7))


def _spikes(peaks: list[int]) -> np.ndarray:
    """One 1-lead window of unit spikes at `peaks`, with its rhythm channels as the DSP paints them."""
    peaks = np.asarray(peaks)
    lead = np.zeros(2000)
    lead[peaks] = 1.0
    x = np.zeros((1, 3, 2000), np.float32)
    x[0, 0] = lead
    x[0, 1:] = rr_channels(lead, 360.0, None, peaks)
    return x


def _ectopic_runs_between_pauses() -> np.ndarray:
    """A beat after each 500-sample pause, then two ectopic beats 250 apart (MIT-BIH 232's pattern): the ectopic
    beats' RR is the window's median."""
    return _spikes([50, 550, 800, 1050, 1550, 1800])


def test_mean_reference_finds_ectopic_runs_the_median_misses():
    x = _ectopic_runs_between_pauses()
    assert rr_prematurity(x, 1)[0] == pytest.approx(0.0, abs=1e-6)  # against the median nothing came early
    assert rr_prematurity(x, 1, "mean", 360.0)[0] == pytest.approx(np.log(350 / 250), rel=1e-3)  # mean RR 350
    with pytest.raises(ValueError, match="fs"):
        rr_prematurity(x, 1, "mean")


def test_mean_reference_reads_a_lone_early_beat_as_the_median_does():
    # an early beat and its compensatory pause leave the mean RR where the median is
    x = _windows_with_an_early_beat()
    np.testing.assert_allclose(rr_prematurity(x, 1, "mean", 360.0), rr_prematurity(x, 1), rtol=1e-3, atol=1e-6)


def test_premature_rule_puts_s_on_the_ectopic_run_with_the_mean_reference():
    from stream_ecg.intervals import premature_beats
    from stream_ecg.rhythm import rereferenced

    x = _ectopic_runs_between_pauses()
    peaks = np.array([50, 550, 800, 1050, 1550, 1800])
    assert premature_beats(peaks, x[0, 1], 0.1)[0].size == 0
    early, rel = premature_beats(peaks, x[0, 1], 0.1, "mean")
    np.testing.assert_array_equal(early, [800, 1050, 1800])
    np.testing.assert_allclose(rel, 250 / 350 - 1, rtol=1e-4)
    np.testing.assert_array_equal(rereferenced(np.array([0.0, -0.2]), "mean"), [0.0, -0.2])  # under 3 beats: as painted
    with pytest.raises(ValueError, match="reference"):
        rereferenced(np.zeros(4), "mode")


def test_card_takes_a_known_prematurity_reference_only(tiny_model_dir):
    assert _card(tiny_model_dir, {"S": 5.0}).prematurity_reference == "median"  # cards before the field
    raw = {**_card(tiny_model_dir, {"S": 5.0}).raw, "prematurity_reference": "mean"}
    assert ModelCard.from_dict(raw).prematurity_reference == "mean"
    with pytest.raises(CardError, match="prematurity_reference"):
        ModelCard.from_dict({**raw, "prematurity_reference": "mode"})


def test_fuse_applies_the_cards_reference(tiny_model_dir):
    card = ModelCard.from_dict({**_card(tiny_model_dir, {"S": 20.0}).raw, "prematurity_reference": "mean"})
    probs = np.array([[0.72, 0.1, 0.2]], np.float32)
    out = fuse(card, _ectopic_runs_between_pauses(), probs)
    assert np.log(out[0, 1] / (1 - out[0, 1])) == pytest.approx(np.log(0.1 / 0.9) + 20 * np.log(350 / 250), rel=1e-3)


def _run_of_tachycardia() -> np.ndarray:
    """A run of beats at RR 250 (the window's median) after two at RR 400."""
    return _spikes([100, 500, 900, 1150, 1400, 1650, 1900])


def test_stream_reference_sees_a_run_that_the_windows_median_hides():
    x = _run_of_tachycardia()
    assert rr_prematurity(x, 1)[0] == pytest.approx(0.0, abs=1e-6)  # against its own median nothing came early
    stream = rr_prematurity(x, 1, "stream", 360.0, stream_rr=np.array([400.0]))
    assert stream[0] == pytest.approx(np.log(400 / 250), rel=1e-3)
    waiting = rr_prematurity(x, 1, "stream", 360.0, stream_rr=np.array([np.nan]))  # too few RRs held: the window's own
    np.testing.assert_allclose(waiting, rr_prematurity(x, 1), atol=1e-6)
    with pytest.raises(ValueError, match="stream RR"):
        rr_prematurity(x, 1, "stream", 360.0)


def test_a_stream_card_fuses_with_each_windows_reference_and_needs_it(tiny_model_dir):
    from stream_ecg.fusion import infer_windows, stream_fused

    raw = _card(tiny_model_dir, {"S": 20.0}).raw
    card = ModelCard.from_dict({**raw, "dsp": {**raw["dsp"], "rhythm": True}, "model_config": {**raw["model_config"], "in_leads": 3},
                                "rhythm_fusion": {"S": 20.0}, "prematurity_reference": "stream"})
    assert stream_fused(card) and card.prematurity_context == 108000
    probs = np.array([[0.72, 0.1, 0.2]], np.float32)
    out = fuse(card, _run_of_tachycardia(), probs, np.array([400.0]))
    assert np.log(out[0, 1] / (1 - out[0, 1])) == pytest.approx(np.log(0.1 / 0.9) + 20 * np.log(400 / 250), rel=1e-3)

    class Plain:  # any backend: infer_windows hands the reference only to a stream-fused model
        def __init__(self, c):
            self.card, self.seen = c, None

        def infer(self, x, *extra):
            self.seen = extra
            return probs, np.zeros((1, 2000), np.float32)

    plain = Plain(_card(tiny_model_dir, {"S": 20.0}))
    infer_windows(plain, _run_of_tachycardia(), np.array([400.0]))
    assert plain.seen == ()
    stream = Plain(card)
    infer_windows(stream, _run_of_tachycardia(), np.array([400.0]))
    np.testing.assert_array_equal(stream.seen[0], [400.0])

    assert card.stream_reference == (108000, "median")
    mean = ModelCard.from_dict({**card.raw, "prematurity_centre": "mean"})
    assert mean.stream_reference == (108000, "mean")
    with pytest.raises(CardError, match="prematurity_centre"):
        ModelCard.from_dict({**card.raw, "prematurity_centre": "mode"})
    with pytest.raises(CardError, match="stream"):  # one stream reference serves the fusion and the rule
        ModelCard.from_dict({**card.raw, "interval_rule": {**card.raw["interval_rule"], "premature": 0.1, "premature_context": 10800}})
