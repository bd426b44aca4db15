"""Per-stream state: windows equal the batch path, gaps are never glued, bad chunks are flagged, memory is bounded."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ecg.buffer import StreamRefused, StreamState, StreamTable, check_layout
from stream_ecg.card import ModelCard
from stream_ecg.data import excerpt_dir, load_record
from stream_ecg.dsp import DspConfig, normalise_window, preprocess, window_input
from stream_ecg.intervals import IntervalRule
from stream_ecg.wire import Chunk

WINDOW, HOP = 2000, 360


def make_card(**over) -> ModelCard:
    d = {
        "name": "unit", "version": "0", "fs": 360.0, "leads": ["MLII"],
        "lead_aliases": {"MLII": ["II", "ECG"]}, "lead_fallback": "first",
        "window": WINDOW, "hop": HOP, "classes": ["normal", "S", "V"], "abnormal": ["S", "V"],
        "thresholds": {"S": 0.5, "V": 0.5}, "dsp": DspConfig().to_dict(),
        "interval_rule": IntervalRule().to_dict(), "files": {},
    }
    d.update(over)
    return ModelCard.from_dict(d)


@pytest.fixture(scope="module")
def rec():
    return load_record("208", excerpt_dir())


def chunks(rec, step: int, n_samples: int, first_seq: int = 0, sid: str = "bed"):
    for k, a in enumerate(range(0, n_samples, step)):
        yield Chunk(sid, first_seq + k, a, rec.fs, rec.leads, rec.signal[:, a : min(a + step, n_samples)])


def feed(table_or_state, cs, now: float = 0.0):
    windows, outcomes = [], []
    for c in cs:
        out = table_or_state.push(c, now)
        outcomes.append(out)
        windows.extend(out.windows)
    return windows, outcomes


def offline(rec, lo: int, hi: int, starts) -> np.ndarray:
    """The batch path on signal[lo:hi] (MLII): preprocess once, cut windows, normalise."""
    sig = preprocess(rec.signal[:1, lo:hi], rec.fs, DspConfig())
    return normalise_window(np.stack([sig[:, s : s + WINDOW] for s in starts]), DspConfig().norm_eps)


def test_windows_equal_the_batch_path_and_come_every_hop(rec):
    n = 20 * 360
    table = StreamTable(make_card())
    windows, _ = feed(table, chunks(rec, 90, n))
    starts = [w.start for w in windows]
    assert starts == list(range(0, n - WINDOW + 1, HOP))
    np.testing.assert_allclose(np.stack([w.x for w in windows]), offline(rec, 0, n, starts), atol=1e-5)
    assert all(w.x.shape == (1, WINDOW) and w.x.dtype == np.float32 and w.flags == () for w in windows)


def test_stream_rhythm_context_equals_the_batch_path_and_survives_a_gap(rec):
    dsp = DspConfig(rhythm=True, rhythm_context=64)
    card = make_card(dsp=dsp.to_dict(), model_config={"in_leads": 3})
    n = 60 * 360
    state_windows, _ = feed(StreamTable(card), chunks(rec, 250, n))
    starts = np.array([w.start for w in state_windows])
    sig = preprocess(rec.signal[:1, :n], rec.fs, dsp)
    batch = window_input(np.stack([sig[:, s : s + WINDOW] for s in starts]), dsp, starts)
    np.testing.assert_allclose(np.stack([w.x for w in state_windows]), batch, atol=1e-5)
    # a dropped chunk starts a fresh segment of signal but keeps the patient's RR history
    table = StreamTable(card)
    feed(table, chunks(rec, 250, n))
    (state,) = table.streams.values()
    kept = len(state.rr_history.rr)
    assert kept > 40
    feed(table, [Chunk("bed", 10_000, n + 900, rec.fs, rec.leads, rec.signal[:, n + 900 : n + 900 + 250])])
    assert len(state.rr_history.rr) == kept
    # another layout (a different monitor or patient) starts its rhythm afresh
    feed(table, [Chunk("bed", 10_001, 0, 250.0, rec.leads, rec.signal[:, :250])])
    assert len(table.streams["bed"].rr_history.rr) == 0


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 900), min_size=1, max_size=40))
def test_any_chunking_gives_the_same_windows(sizes):
    rec = load_record("100", excerpt_dir())
    bounds = np.cumsum([0, *sizes])
    n = int(bounds[-1])
    card = make_card()
    first = Chunk("p", 0, 0, rec.fs, rec.leads, rec.signal[:, : bounds[1]])
    state = StreamState(card, first, 0.0)
    cs = [Chunk("p", k, int(a), rec.fs, rec.leads, rec.signal[:, a:b]) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    windows, _ = feed(state, cs)
    starts = list(range(0, n - WINDOW + 1, HOP))
    assert [w.start for w in windows] == starts
    if starts:
        np.testing.assert_allclose(np.stack([w.x for w in windows]), offline(rec, 0, n, starts), atol=1e-5)


def test_a_gap_resets_and_the_next_window_starts_fresh(rec):
    table = StreamTable(make_card())
    before, _ = feed(table, chunks(rec, 90, 30 * 90))
    # Chunks 30 and 31 are lost; 32.. continue on the stream's clock.
    lo = 32 * 90
    after_chunks = [Chunk("bed", 32 + k, lo + k * 90, rec.fs, rec.leads, rec.signal[:, lo + k * 90 : lo + (k + 1) * 90]) for k in range(30)]
    after, outcomes = feed(table, after_chunks)
    assert outcomes[0].events == ("gap",)
    assert [w.start for w in before] == [0, 360]
    assert [w.start for w in after] == [lo, lo + HOP]
    assert after[0].flags == ("gap",) and after[1].flags == ()
    # Fresh: equal to preprocessing only the post-gap signal, not glued to what came before.
    np.testing.assert_allclose(after[0].x, offline(rec, lo, lo + 2700, [0])[0], atol=1e-5)


def test_duplicate_and_out_of_order_are_dropped_and_flagged(rec):
    table = StreamTable(make_card())
    cs = list(chunks(rec, 90, 60 * 90))
    order = [*cs[:25], cs[24], *cs[26:28], cs[25], *cs[28:]]  # a duplicate of 24, 25 arrives late
    windows, outcomes = feed(table, order)
    dropped = [o.dropped for o in outcomes if o.dropped]
    assert dropped == ["duplicate", "out_of_order"]
    flagged = [w for w in windows if w.flags]
    assert flagged and set(flagged[0].flags) == {"duplicate", "gap", "out_of_order"}


def test_rate_or_lead_change_resyncs_with_monotonic_indices(rec):
    table = StreamTable(make_card())
    w1, _ = feed(table, chunks(rec, 90, 12 * 360))
    # The gateway switches to 250 Hz (resampled here by hand) but keeps counting its seq.
    sig = rec.signal[:, 12 * 360 : 24 * 360]
    x250 = np.stack([np.interp(np.arange(0, sig.shape[1], 360 / 250), np.arange(sig.shape[1]), lead) for lead in sig]).astype(np.float32)
    seq0 = 12 * 4
    cs = [Chunk("bed", seq0 + k, a, 250.0, rec.leads, x250[:, a : a + 62]) for k, a in enumerate(range(0, x250.shape[1], 62))]
    w2, outcomes = feed(table, cs)
    assert outcomes[0].events == ("resync",)
    assert w2 and w2[0].flags == ("resync",)
    assert w2[0].start >= w1[-1].start + HOP
    assert all(b.start - a.start == HOP for a, b in zip(w2, w2[1:]))


def test_streams_the_card_cannot_honour_are_refused_once(rec):
    strict = make_card(lead_fallback="refuse")
    table = StreamTable(strict)
    c = Chunk("v-only", 0, 0, rec.fs, ("V1", "V5"), rec.signal[:, :90])
    first = table.push(c, 0.0)
    assert first.dropped == "refused" and first.refusal is not None and first.refusal.reason == "leads"
    assert "MLII" in first.refusal.message
    again = table.push(Chunk("v-only", 1, 90, rec.fs, ("V1", "V5"), rec.signal[:, 90:180]), 0.0)
    assert again.dropped == "refused" and again.refusal is None
    with pytest.raises(StreamRefused) as err:
        check_layout(make_card(), ("MLII",), 10.0)
    assert err.value.reason == "sample_rate"


def test_lead_fallback_is_flagged_on_every_window(rec):
    table = StreamTable(make_card())
    windows, _ = feed(table, (Chunk("fb", c.seq, c.start, c.fs, ("V1", "V5"), c.samples) for c in chunks(rec, 90, 8 * 360)))
    assert windows and all("lead_fallback" in w.flags for w in windows)


def test_memory_is_bounded_and_idle_streams_are_evicted(rec):
    table = StreamTable(make_card(), idle_s=10.0)
    feed(table, chunks(rec, 3600, 60 * 360), now=0.0)  # 10 s chunks: bigger than the ring
    state = table.streams["bed"]
    assert state.ring.shape == (1, WINDOW + HOP)
    assert state.nbytes < 1_000_000
    feed(table, chunks(rec, 90, 2 * 90, sid="other"), now=5.0)
    assert table.evict_idle(now=12.0) == ["bed"]
    assert list(table.streams) == ["other"]


def test_resampled_input_windows_on_the_model_clock(rec):
    sig = rec.signal[:, : 30 * 360]
    x500 = np.stack([np.interp(np.arange(0, sig.shape[1], 360 / 500), np.arange(sig.shape[1]), lead) for lead in sig]).astype(np.float32)
    table = StreamTable(make_card())
    cs = [Chunk("hi", k, a, 500.0, rec.leads, x500[:, a : a + 125]) for k, a in enumerate(range(0, x500.shape[1], 125))]
    windows, _ = feed(table, cs)
    assert [w.start for w in windows][:3] == [0, HOP, 2 * HOP]
    assert len(windows) >= (30 * 360 - WINDOW) // HOP - 1


def test_stream_irregularity_equals_the_batch_path_and_restarts_with_the_layout(rec):
    from stream_ecg.postprocess import new_recent, stream_irregularity

    card = make_card(interval_rule=IntervalRule(regular_stream=0.1).to_dict())
    n = 60 * 360
    windows, _ = feed(StreamTable(card), chunks(rec, 250, n))
    starts = np.array([w.start for w in windows])
    batch = offline(rec, 0, n, starts)
    expected = stream_irregularity(card, batch, starts, new_recent(card))
    np.testing.assert_allclose([w.irregularity for w in windows], expected, atol=1e-6)
    assert np.ptp(expected) > 0  # 208's PVCs and pauses move it: the check is not one of zeros
    table = StreamTable(card)
    feed(table, chunks(rec, 250, n))
    assert len(table.streams["bed"].recent.rr) > 20
    feed(table, [Chunk("bed", 10_001, 0, 250.0, rec.leads, rec.signal[:, :250])])  # another monitor or patient
    assert len(table.streams["bed"].recent.rr) == 0
    assert all(w.irregularity is None for w in feed(StreamTable(make_card()), chunks(rec, 250, 3 * WINDOW))[0])


def test_stream_rr_reference_equals_the_batch_path_and_restarts_with_the_layout(rec):
    from stream_ecg.postprocess import new_reference, stream_rr_reference

    rule = IntervalRule(premature=0.1, premature_context=10800, premature_centre="mean")
    card = make_card(dsp=DspConfig(rhythm=True).to_dict(), interval_rule=rule.to_dict())  # the rule reads rr_prev
    n = 60 * 360
    windows, _ = feed(StreamTable(card), chunks(rec, 250, n))
    starts = np.array([w.start for w in windows])
    expected = stream_rr_reference(card, offline(rec, 0, n, starts), starts, new_reference(card))  # reads lead 0 only
    np.testing.assert_allclose([w.rr_reference for w in windows], expected, atol=1e-6)
    assert np.isfinite(expected).sum() > 10 and np.ptp(expected[np.isfinite(expected)]) > 0  # not a constant
    table = StreamTable(card)
    feed(table, chunks(rec, 250, n))
    held = len(table.streams["bed"].reference.rr)
    k = n // 250 + 4  # two chunks lost: a gap keeps the stream's rhythm (its RRs age out of the span)
    _, outcomes = feed(table, [Chunk("bed", k, k * 250, rec.fs, rec.leads, rec.signal[:, k * 250 : (k + 1) * 250])])
    assert outcomes[0].events == ("gap",) and len(table.streams["bed"].reference.rr) == held > 20
    feed(table, [Chunk("bed", 10_001, 0, 250.0, rec.leads, rec.signal[:, :250])])  # another monitor or patient
    assert len(table.streams["bed"].reference.rr) == 0
    assert all(w.rr_reference is None for w in feed(StreamTable(make_card()), chunks(rec, 250, 3 * WINDOW))[0])
