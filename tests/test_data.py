"""Data layer: record loading, AAMI counts, bundled excerpt, paper segments, streaming windows."""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ecg.data import (
    AAMI_CLASSES,
    ALL_RECORDS,
    CLOSEST_RULE,
    DS1,
    DS2,
    ENV_VAR,
    MASK_CODES,
    PACED_RECORDS,
    SYMBOL_TO_AAMI,
    Beats,
    MitdbMissing,
    RecordNotFound,
    aami_counts,
    beat_mask,
    build_paper_segments,
    count_paper_segments,
    excerpt_dir,
    load_record,
    mitdb_dir,
    paper_segments,
    sliding_windows,
)
from stream_ecg.data.report import DE_CHAZAL_2004, PAPER_SEGMENTS

MITDB = mitdb_dir(required=False)
# wfdb 4.3 calls pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


def _missing_reason() -> str:
    try:
        mitdb_dir()
    except MitdbMissing as exc:
        return str(exc)
    return ""


def needs_mitdb(test):
    """Mark a test as needing the full database; skip it with the how-to-get-it message."""
    test = pytest.mark.skipif(MITDB is None, reason=_missing_reason())(test)
    return pytest.mark.mitdb(test)


@cache
def full_record(name: str):
    """One read per record per test session."""
    return load_record(name, MITDB)


def beats(samples, symbols) -> Beats:
    return Beats(samples=np.asarray(samples, np.int64), symbols=np.asarray(list(symbols), "<U1"))


# ---------------------------------------------------------------- locating and loading


def test_missing_database_message_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(MitdbMissing) as err:
        mitdb_dir()
    message = str(err.value)
    assert ENV_VAR in message
    assert "wfdb.dl_database('mitdb', 'data/mitdb')" in message
    assert "stream-ecg data fetch" in message
    assert mitdb_dir(required=False) is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert mitdb_dir() == tmp_path


def test_missing_record_names_the_directory(tmp_path):
    with pytest.raises(RecordNotFound, match=re.escape(str(tmp_path))):
        load_record("999", tmp_path)


def test_aami_mapping_is_ec57():
    expected = {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F", "Q": "/fQ"}
    for cls, symbols in expected.items():
        assert all(SYMBOL_TO_AAMI[s] == cls for s in symbols)
    assert set(SYMBOL_TO_AAMI.values()) == set(AAMI_CLASSES)
    assert not {"+", "~", "|", "x", "[", "]", '"', "!"} & set(SYMBOL_TO_AAMI)


def test_loads_any_wfdb_record(tmp_path):
    """Another database's shape: 3 leads at 250 Hz in microvolts, non-beat annotations mixed in."""
    fs, n = 250, 5000
    t = np.arange(n) / fs
    d_signal = np.stack([np.round(1000 * np.sin(2 * np.pi * k * t)) for k in (1, 2, 3)], 1)
    wfdb.wrsamp("rec", fs=fs, units=["uV"] * 3, sig_name=["I", "II", "V2"],
                d_signal=d_signal.astype(np.int32), fmt=["16"] * 3, adc_gain=[1.0] * 3,
                baseline=[0] * 3, write_dir=str(tmp_path))
    wfdb.wrann("rec", "atr", sample=np.array([10, 200, 400, 600, 800]),
               symbol=["+", "N", "~", "V", "B"], aux_note=["(N", "", "", "", ""],
               fs=fs, write_dir=str(tmp_path))
    rec = load_record("rec", tmp_path)
    assert rec.fs == 250.0 and rec.leads == ("I", "II", "V2") and rec.units == ("mV",) * 3
    assert rec.signal.shape == (3, n) and rec.signal.dtype == np.float32
    np.testing.assert_allclose(rec.signal, d_signal.T / 1000, atol=1e-6)
    assert rec.beats.samples.tolist() == [200, 600, 800]
    assert rec.beats.aami().tolist() == ["N", "V", "N"]


# ---------------------------------------------------------------- full database


def _readme_table() -> dict[str, tuple[tuple[str, ...], int]]:
    """Leads and beat total per record from the database README's annotation table."""
    rows = {}
    for line in (MITDB / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 20 and re.fullmatch(r"\d{3}", cells[0]):
            rows[cells[0]] = (tuple(cells[1].split("/")), int(cells[17]))
    return rows


@needs_mitdb
@pytest.mark.parametrize("name", ALL_RECORDS)
def test_every_record_loads(name):
    rec = full_record(name)
    assert rec.signal.shape == (2, 650000) and rec.signal.dtype == np.float32
    assert rec.fs == 360.0 and rec.units == ("mV", "mV")
    expected = {"102": ("V5", "V2"), "104": ("V5", "V2"), "114": ("V5", "MLII")}
    if name in expected:
        assert rec.leads == expected[name]
    else:
        assert rec.leads[0] == "MLII"
    if (MITDB / "README.md").is_file():
        leads, n_beats = _readme_table()[name]
        assert rec.leads == leads
        assert len(rec.beats) == n_beats
    assert np.all(np.diff(rec.beats.samples) >= 0)



@needs_mitdb
@pytest.mark.parametrize("split,records", [("DS1", DS1), ("DS2", DS2)])
def test_ds1_ds2_match_de_chazal(split, records):
    assert not set(records) & set(PACED_RECORDS) and not set(DS1) & set(DS2)
    assert len(set(DS1) | set(DS2) | set(PACED_RECORDS)) == 48
    # Exact: de Chazal counted every annotated beat of each whole 30-minute record (no
    # learning period, no edge trimming). Dropping even the first and last 1 s of each record
    # loses 53 N beats from DS1 and 51 from DS2, so the published totals rule trimming out.
    assert aami_counts(records, MITDB) == DE_CHAZAL_2004[split]



# ---------------------------------------------------------------- bundled excerpt

EXCERPT = {"208": "V", "232": "A", "100": "A"}


def _excerpt_start(name: str) -> int:
    comments = wfdb.rdheader(str(excerpt_dir() / name)).comments
    found = [re.search(r"original start sample (\d+)", c) for c in comments]
    return int(next(m for m in found if m).group(1))


@pytest.mark.parametrize("name,symbol", EXCERPT.items())
def test_excerpt_loads_without_database(name, symbol):
    rec = load_record(name, excerpt_dir())
    assert rec.fs == 360.0 and rec.signal.shape == (2, 300 * 360)
    assert rec.signal.dtype == np.float32 and rec.leads[0] == "MLII"
    assert np.sum(rec.beats.symbols == symbol) >= 10
    comments = " ".join(wfdb.rdheader(str(excerpt_dir() / name)).comments)
    assert "ODC Attribution License" in comments and "10.13026/C2F305" in comments


def test_excerpt_is_small_and_documented():
    files = [p for p in excerpt_dir().iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_200_000
    readme = (excerpt_dir() / "README.md").read_text()
    assert "ODC Attribution License" in readme and "make_excerpt" in readme
    for name in EXCERPT:
        assert str(_excerpt_start(name)) in readme


@needs_mitdb
@pytest.mark.parametrize("name", EXCERPT)
def test_excerpt_equals_original_span(name):
    start = _excerpt_start(name)
    excerpt, full = load_record(name, excerpt_dir()), full_record(name)
    n = excerpt.signal.shape[1]
    np.testing.assert_array_equal(excerpt.signal, full.signal[:, start : start + n])
    inside = (full.beats.samples >= start) & (full.beats.samples < start + n)
    np.testing.assert_array_equal(excerpt.beats.samples, full.beats.samples[inside] - start)
    np.testing.assert_array_equal(excerpt.beats.symbols, full.beats.symbols[inside])
    ex_ann = wfdb.rdann(str(excerpt_dir() / name), "atr")
    src_ann = wfdb.rdann(str(MITDB / name), "atr", sampfrom=start, sampto=start + n - 1)
    # Everything shifted over, plus the one restated rhythm annotation at sample 0.
    assert ex_ann.symbol[1:] == src_ann.symbol and ex_ann.aux_note[1:] == src_ann.aux_note
    assert ex_ann.symbol[0] == "+" and ex_ann.sample[0] == 0



# ---------------------------------------------------------------- paper segments


def _two_lead(n: int) -> np.ndarray:
    ramp = 1.0 + np.arange(n, dtype=np.float32)
    return np.stack([ramp, -2 * ramp])


def test_beat_extents_are_halfway():
    starts, ends = beats([100, 300, 700], "NNN").extents(1000)
    assert starts.tolist() == [0, 200, 500] and ends.tolist() == [200, 500, 900]
    starts, ends = beats([50, 300, 980], "NNN").extents(1000)
    assert starts.tolist() == [0, 175, 640] and ends.tolist() == [175, 640, 1000]


def test_paper_segments_pack_label_and_pad():
    # RR 400: five beats fill exactly 2000 samples, the sixth opens the next segment.
    groups = ["NNVNN", "NANNN", "NNSNN", "NLNVN", "NNNNN", "VANNN", "NNVVN"]
    symbols = "".join(groups)
    r = 200 + 400 * np.arange(len(symbols))
    signal = _two_lead(int(r[-1]) + 200)
    seg = paper_segments(signal, beats(r, symbols), length=2000, record="t")
    assert seg.y.tolist() == [0, 1, 0]
    assert seg.start.tolist() == [0, 2000, 12000]
    assert seg.n_beats.tolist() == [5, 5, 5] and seg.record.tolist() == ["t"] * 3
    assert seg.classes == ("PVC", "APB") and seg.x.shape == (3, 2, 2000)
    assert seg.beat_pos[0].tolist() == [200, 600, 1000, 1400, 1800]
    assert "".join(seg.beat_sym[1]) == "NANNN"
    np.testing.assert_array_equal(seg.x[1], signal[:, 2000:4000])
    assert not np.array_equal(seg.x[:, 0], seg.x[:, 1])


def test_paper_segments_zero_pad_and_long_pause():
    # Beats 2 and 3 sit in a 4000-sample pause: each spans 2350 > 2000 samples, so each
    # closes the open segment and is skipped (the APB inside the pause is lost with it).
    r = np.array([350, 1050, 1750, 5750, 6450, 7150])
    b = beats(r, "NVNANV")
    signal = _two_lead(7600)
    seg = paper_segments(signal, b, length=2000)
    assert b.extents(7600)[0].tolist() == [0, 700, 1400, 3750, 6100, 6800]
    assert seg.start.tolist() == [0, 6100] and seg.y.tolist() == [0, 0]
    assert seg.n_beats.tolist() == [2, 2]
    np.testing.assert_array_equal(seg.x[0, :, :1400], signal[:, :1400])
    assert not seg.x[:, :, 1400:].any()


@settings(max_examples=60, deadline=None)
@given(
    rr=st.lists(st.integers(80, 900), min_size=2, max_size=60),
    symbols=st.text(alphabet="NNNNVASL", min_size=60, max_size=60),
    length=st.integers(300, 2500),
)
def test_paper_segments_invariants(rr, symbols, length):
    r = np.cumsum([40] + rr)
    symbols = symbols[: len(r)]
    n = int(r[-1]) + 50
    signal = _two_lead(n)
    b = beats(r, symbols)
    seg = paper_segments(signal, b, length=length)
    prev_end = 0
    for k in range(len(seg)):
        pos, sym = seg.beat_pos[k], "".join(seg.beat_sym[k])
        assert set(sym) <= {"N", "V"} if seg.y[k] == 0 else set(sym) <= {"N", "A"}
        assert ("V" if seg.y[k] == 0 else "A") in sym
        assert np.all((pos >= 0) & (pos < length))
        used = int(np.count_nonzero(seg.x[k, 0]))
        assert used <= length and seg.start[k] >= prev_end
        expected = signal[:, seg.start[k] : seg.start[k] + used]
        np.testing.assert_array_equal(seg.x[k, :, :used], expected)
        prev_end = seg.start[k] + used


def test_build_with_resampling_transform_moves_beats():
    def halve(signal, fs):
        return signal[:, ::2]

    plain = build_paper_segments(["208"], excerpt_dir(), length=1000)
    halved = build_paper_segments(["208"], excerpt_dir(), length=500, transform=halve)
    assert halved.x.shape[1:] == (2, 500) and len(halved) > 0
    assert abs(len(halved) - len(plain)) <= 0.1 * len(plain)
    first = halved.beat_pos[0] + halved.start[0]
    assert np.all(np.abs(first - plain.beat_pos[0][: len(first)] // 2 - plain.start[0] // 2) <= 60)


@needs_mitdb
def test_full_paper_segment_build(capsys):
    seg = build_paper_segments(ALL_RECORDS, MITDB)
    counts = seg.counts()
    with capsys.disabled():
        print(f"\npaper segments, plain rule: {counts} (paper: {PAPER_SEGMENTS}); "
              f"CLOSEST_RULE: {count_paper_segments(data_dir=MITDB, rule=CLOSEST_RULE)}")
    # The numbers quoted in docs/data.md and the segments module docstring.
    assert counts == {"PVC": 2643, "APB": 465}
    assert counts == count_paper_segments(data_dir=MITDB)
    assert seg.x.shape == (len(seg), 2, 2000) and seg.x.dtype == np.float32
    assert len(seg.beat_pos) == len(seg.beat_sym) == len(seg)
    assert not np.array_equal(seg.x[:, 0], seg.x[:, 1])
    assert set(seg.record.tolist()) <= set(ALL_RECORDS)



# ---------------------------------------------------------------- streaming windows


@given(n=st.integers(0, 20000), window=st.integers(1, 3000), hop=st.integers(1, 1000))
def test_window_count(n, window, hop):
    w = sliding_windows(n, beats([], ""), window=window, hop=hop)
    assert len(w) == (0 if n < window else 1 + (n - window) // hop)
    assert w.mask.shape == (len(w), window) and w.labels.shape == (len(w), 5)


def test_window_labels():
    b = beats([450, 950, 1900, 2800, 3600], "NVAFN")
    w = sliding_windows(4000, b, window=1000, hop=500)
    assert w.starts.tolist() == [0, 500, 1000, 1500, 2000, 2500, 3000]
    assert _label_names(w) == ["NV", "V", "S", "S", "F", "F", "N"]
    # With a 60-sample margin the V at 950 no longer labels the first window (ends at 1000).
    assert _label_names(sliding_windows(4000, b, 1000, 500, edge_margin=60))[:2] == ["N", "V"]


def _label_names(w) -> list[str]:
    return ["".join(c for c, on in zip(AAMI_CLASSES, row) if on) for row in w.labels]


def test_window_mask_marks_beats():
    # 450 and 950 are far apart: extent clipped to +-0.3 s (108 samples at 360 Hz).
    # 2000 and 2150 are close: their shared boundary is halfway (2075); the last beat reuses
    # its 75-sample half-RR on the far side.
    b = beats([450, 950, 2000, 2150], "NVAQ")
    full = beat_mask(3000, b, fs=360.0)
    assert np.all(full[342:559] == MASK_CODES["N"]) and full[341] == 0 and full[559] == 0
    assert np.all(full[842:1059] == MASK_CODES["V"]) and full[1059] == 0
    assert np.all(full[1892:2075] == MASK_CODES["S"]) and full[1891] == 0
    assert np.all(full[2075:2225] == MASK_CODES["Q"]) and full[2225] == 0
    w = sliding_windows(3000, b, window=1000, hop=250, fs=360.0)
    for k, start in enumerate(w.starts):
        np.testing.assert_array_equal(w.mask[k], full[start : start + 1000])
    assert w.mask.dtype == np.int8


def test_window_x_is_per_lead():
    signal = _two_lead(5000)
    w = sliding_windows(5000, beats([100], "N"), window=2000, hop=360)
    x = w.x(signal)
    assert x.shape == (len(w), 2, 2000)
    np.testing.assert_array_equal(x[3], signal[:, 3 * 360 : 3 * 360 + 2000])
