"""Behaviour of stream_ecg.dsp at its public seams: chunking parity, filters, resampling, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ecg.dsp import (
    DspConfig,
    DspError,
    StreamPreprocessor,
    StreamResampler,
    design_sos,
    filter_chunk,
    normalise_window,
    preprocess,
)

IN_RATES = [128.0, 250.0, 257.0, 360.0, 500.0, 1000.0]
PARITY_ATOL = 1e-5  # mV


def _ecg_like(seed: int, n_leads: int, n: int) -> np.ndarray:
    """Random walk + per-lead DC offset + white noise: the baseline wander the filter must track."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-300.0, 300.0, size=(n_leads, 1))
    walk = np.cumsum(rng.normal(0.0, 0.05, size=(n_leads, n)), axis=-1)
    return offset + walk + rng.normal(0.0, 0.2, size=(n_leads, n))


def _split(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(x, sorted(cuts), axis=-1)


def _amplitude(y: np.ndarray, f: float, fs: float) -> float:
    """Least-squares amplitude of the f Hz component of a 1-D signal."""
    t = np.arange(y.size) / fs
    basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(coef[0], coef[1]))


signals = st.tuples(
    st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(500, 6000), st.sampled_from(IN_RATES)
)


@settings(max_examples=60, deadline=None)
@given(sig=signals, notch=st.sampled_from([None, 50.0, 60.0]), data=st.data())
def test_streaming_preprocessor_equals_batch_for_any_chunking(sig, notch, data):
    seed, n_leads, n, in_fs = sig
    cfg = DspConfig(notch_hz=notch)
    x = _ecg_like(seed, n_leads, n)
    cuts = data.draw(st.lists(st.integers(0, n), max_size=40), label="cuts")

    pre = StreamPreprocessor(cfg, in_fs, n_leads)
    chunks = _split(x, cuts)
    outs = [pre.process(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks)]
    streamed = np.concatenate(outs, axis=-1)
    batch = preprocess(x, in_fs, cfg)

    assert streamed.dtype == batch.dtype == np.float32
    assert streamed.shape == batch.shape
    assert pre.samples_out == batch.shape[1]
    np.testing.assert_allclose(streamed, batch, rtol=0, atol=PARITY_ATOL)


@settings(max_examples=60, deadline=None)
@given(sig=signals, notch=st.sampled_from([None, 60.0]), data=st.data())
def test_filter_chunk_equals_one_shot_for_any_chunking(sig, notch, data):
    seed, n_leads, n, _ = sig
    sos = design_sos(DspConfig(notch_hz=notch))
    x = _ecg_like(seed, n_leads, n).astype(np.float32)
    cuts = data.draw(st.lists(st.integers(0, n), max_size=40), label="cuts")

    whole, _ = filter_chunk(x, sos, None)
    state, outs = None, []
    for c in _split(x, cuts):
        y, state = filter_chunk(c, sos, state)
        outs.append(y)
    np.testing.assert_allclose(np.concatenate(outs, axis=-1), whole, rtol=0, atol=PARITY_ATOL)


@pytest.mark.parametrize("in_fs", [250.0, 360.0])
def test_one_sample_chunks_equal_batch(in_fs):
    cfg = DspConfig(notch_hz=50.0)
    x = _ecg_like(7, 2, 600)
    pre = StreamPreprocessor(cfg, in_fs, 2)
    outs = [pre.process(x[:, i : i + 1], last=i == x.shape[1] - 1) for i in range(x.shape[1])]
    np.testing.assert_allclose(np.concatenate(outs, axis=-1), preprocess(x, in_fs, cfg), atol=PARITY_ATOL)


def test_filter_chunk_does_not_mutate_inputs():
    sos = design_sos(DspConfig())
    x = _ecg_like(1, 2, 100)
    x_before = x.copy()
    _, state = filter_chunk(x, sos, None)
    zi_before = state.zi.copy()
    filter_chunk(x, sos, state)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(state.zi, zi_before)


def test_bandpass_keeps_10hz_and_removes_0p1hz():
    fs = 360.0
    t = np.arange(int(120 * fs)) / fs
    x = (np.sin(2 * np.pi * 0.1 * t) + np.sin(2 * np.pi * 10.0 * t))[None, :]
    y = preprocess(x, fs, DspConfig())[0].astype(np.float64)
    settled = y[int(20 * fs) :]
    assert _amplitude(settled, 10.0, fs) == pytest.approx(1.0, rel=0.05)
    assert _amplitude(settled, 0.1, fs) < 0.10


def test_notch_attenuates_mains_by_more_than_20db():
    fs = 360.0
    t = np.arange(int(20 * fs)) / fs
    x = np.sin(2 * np.pi * 60.0 * t)[None, :]
    y = preprocess(x, fs, DspConfig(notch_hz=60.0))[0].astype(np.float64)
    gain_db = 20 * np.log10(_amplitude(y[int(5 * fs) :], 60.0, fs))
    assert gain_db < -20.0


@pytest.mark.parametrize("in_fs", IN_RATES)
def test_constant_offset_gives_no_startup_transient(in_fs):
    x = np.full((2, int(3 * in_fs)), [[250.0], [-80.0]])
    y = preprocess(x, in_fs, DspConfig(notch_hz=50.0))
    assert np.abs(y).max() < 1e-3


def test_resampler_sine_250_to_360():
    in_fs, out_fs, f = 250.0, 360.0, 10.0
    n = 2500
    x = np.sin(2 * np.pi * f * np.arange(n) / in_fs)[None, :]
    rs = StreamResampler(in_fs, out_fs, 1)
    y = np.concatenate([rs.process(x[:, :1000]), rs.process(x[:, 1000:], last=True)], axis=-1)
    assert y.dtype == np.float32
    assert abs(y.shape[1] - n * out_fs / in_fs) <= 1
    expected = np.sin(2 * np.pi * f * np.arange(y.shape[1]) / out_fs)
    edge = int(0.2 * out_fs)
    np.testing.assert_allclose(y[0, edge:-edge], expected[edge:-edge], atol=1e-3)


def test_resampler_passthrough_is_a_copy():
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    rs = StreamResampler(360.0, 360.0, 2)
    y = rs.process(x)
    assert y is not x and rs.delay == 0.0
    np.testing.assert_array_equal(y, x)


def test_reset_makes_output_equal_to_a_fresh_preprocessor():
    cfg, in_fs = DspConfig(), 250.0
    a, b = _ecg_like(3, 2, 2000), _ecg_like(4, 2, 1500)
    pre = StreamPreprocessor(cfg, in_fs, 2)
    pre.process(a)
    pre.reset()
    assert pre.samples_out == 0
    after_reset = pre.process(b, last=True)
    fresh = StreamPreprocessor(cfg, in_fs, 2).process(b, last=True)
    np.testing.assert_array_equal(after_reset, fresh)


def test_process_after_last_requires_reset():
    pre = StreamPreprocessor(DspConfig(), 500.0, 1)
    pre.process(np.zeros((1, 100)), last=True)
    with pytest.raises(DspError, match="reset"):
        pre.process(np.zeros((1, 10)))
    pre.reset()
    pre.process(np.zeros((1, 10)))


def test_normalise_window_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    w = rng.normal(3.0, 2.0, size=(3, 720))
    z = normalise_window(w, 1e-3)
    assert z.dtype == np.float32 and z.shape == w.shape
    np.testing.assert_allclose(z.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=-1), 1.0, atol=1e-5)


def test_normalise_window_flat_lead_gives_finite_zeros():
    w = np.stack([np.full(360, 1.7), np.sin(np.arange(360.0))])
    z = normalise_window(w, 1e-3)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z[0], 0.0, atol=1e-6)


def test_normalise_window_batched_matches_per_window():
    w = np.random.default_rng(1).normal(size=(4, 2, 3, 100)).astype(np.float32)
    z = normalise_window(w, 1e-3)
    assert z.shape == w.shape
    np.testing.assert_allclose(z[2, 1], normalise_window(w[2, 1], 1e-3), atol=1e-6)


def test_config_round_trips_through_json():
    cfg = DspConfig(notch_hz=50.0, order=3)
    assert DspConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lowpass_hz": 180.0},
        {"lowpass_hz": 200.0},
        {"highpass_hz": 0.0},
        {"highpass_hz": 50.0, "lowpass_hz": 40.0},
        {"order": 0},
        {"order": 2.5},
        {"notch_hz": 190.0},
        {"notch_q": 0.0},
        {"norm_eps": 0.0},
        {"fs": -1.0},
    ],
)
def test_bad_config_raises_dsperror(kwargs):
    with pytest.raises(DspError):
        DspConfig(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(DspError, match="unknown"):
        DspConfig.from_dict({**DspConfig().to_dict(), "wavelet": "db4"})


def test_bad_shapes_raise_dsperror():
    pre = StreamPreprocessor(DspConfig(), 360.0, 2)
    with pytest.raises(DspError, match="2-D"):
        pre.process(np.zeros(100))
    with pytest.raises(DspError, match="leads"):
        pre.process(np.zeros((3, 100)))
    with pytest.raises(DspError, match="NaN"):
        pre.process(np.full((2, 10), np.nan))
    with pytest.raises(DspError, match="2-D"):
        preprocess(np.zeros((1, 2, 100)), 360.0, DspConfig())
    with pytest.raises(DspError):
        normalise_window(np.zeros(100), 1e-3)
    with pytest.raises(DspError):
        StreamResampler(250.0, 360.0, 1, quality="best")
    with pytest.raises(DspError):
        StreamResampler(0.0, 360.0, 1)
    _, state = filter_chunk(np.zeros((2, 5)), design_sos(DspConfig()), None)
    with pytest.raises(DspError, match="state"):
        filter_chunk(np.zeros((3, 5)), design_sos(DspConfig()), state)


def test_dsperror_is_a_valueerror():
    assert issubclass(DspError, ValueError)


def test_window_input_hands_over_the_r_peaks_of_its_first_lead():
    """The peaks found while deriving the rhythm and residual channels are the ones every later step would find on
    the model input's first lead, so the stream RR memory, the fusion and the interval rules can take them."""
    from stream_ecg.data import excerpt_dir, load_record
    from stream_ecg.dsp import DspConfig, preprocess, window_input, window_input_with_peaks
    from stream_ecg.rhythm import r_peaks

    cfg = DspConfig(rhythm=True, beat_residual=True, peak_detector="energy_t")
    rec = load_record("208", excerpt_dir())
    sig = preprocess(rec.signal[:1, : 20 * 360], rec.fs, cfg)
    w = np.stack([sig[:, a : a + 2000] for a in (0, 360, 720)])
    x, peaks = window_input_with_peaks(w, cfg)
    np.testing.assert_array_equal(x, window_input(w, cfg))
    assert len(peaks) == 3 and all(len(p) > 3 for p in peaks)
    for xi, p in zip(x, peaks):
        np.testing.assert_array_equal(p, r_peaks(xi[0], cfg.fs, cfg.peak_detector))
    assert window_input_with_peaks(w, DspConfig())[1] is None  # no derived channel: no peaks were needed
