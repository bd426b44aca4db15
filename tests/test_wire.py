"""Wire schema: round trips, one test per kind of malformed input, and decoder fuzzing."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stream_ecg.wire import (
    WIRE_VERSION,
    Chunk,
    Interval,
    Result,
    Status,
    WireError,
    decode,
    decode_chunk,
    encode,
)

DTYPES = ["float32", "float64", "int16", "int32"]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_chunk(**over) -> Chunk:
    fields = dict(
        stream_id="bed-7/ecg",
        seq=3,
        start=1080,
        fs=360.0,
        leads=("MLII", "V5"),
        samples=np.arange(12, dtype=np.float32).reshape(2, 6),
        sent_at=1.7e9,
    )
    return Chunk(**(fields | over))


def make_result(**over) -> Result:
    fields = dict(
        stream_id="bed-7/ecg",
        window_start=3600,
        window_end=7200,
        fs=360.0,
        t_start=10.0,
        t_end=20.0,
        model_id="joint-l2",
        model_version="1.0.0",
        classes=("N", "V", "A"),
        probs=(0.7, 0.2, 0.1),
        intervals=(Interval(4000, 4100, "V", 0.9), Interval(5000, 5150, "A", 0.4)),
        flags=("gap",),
        timing={"received": 1.7e9, "inferred": 1.7e9 + 0.01},
    )
    return Result(**(fields | over))


def make_status(**over) -> Status:
    fields = dict(stream_id="bed-7/ecg", level="refused", reason="fs", message="model needs 360 Hz", at=1.7e9)
    return Status(**(fields | over))


def as_map(msg) -> dict:
    return msgpack.unpackb(encode(msg), raw=False)


def pack(m: dict) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def assert_decodes_or_wire_error(data: bytes):
    """The decoder contract: a valid message that re-encodes to itself, or a precise WireError."""
    try:
        msg = decode(data)
    except WireError as err:
        assert err.__cause__ is None, f"fell through to the safety net: {err!r}"
        assert "\n" not in str(err)
        return None
    assert decode(encode(msg)) == msg
    return msg


# --- strategies -----------------------------------------------------------------------------

stream_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=128)
names = st.text(min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
indices = st.integers(0, 2**40)


@st.composite
def chunks(draw, dtype=None, byteorder=None, contiguous=None):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)) if dtype is None else dtype)
    leads = tuple(draw(st.lists(st.text(min_size=1, max_size=32), min_size=1, max_size=4, unique=True)))
    n = draw(st.integers(1, 40))
    values = draw(hnp.arrays(dtype, (len(leads), n), elements=hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)))
    if draw(st.booleans()) if byteorder is None else byteorder == ">":
        values = values.astype(dtype.newbyteorder(">"))
    if not (draw(st.booleans()) if contiguous is None else contiguous):
        # Fortran order, so rows are strided in memory.
        values = np.asfortranarray(values)
    return Chunk(
        stream_id=draw(stream_ids),
        seq=draw(st.integers(0, 2**63 - 1)),
        start=draw(indices),
        fs=draw(st.floats(1, 20000)),
        leads=leads,
        samples=values,
        sent_at=draw(finite),
    )


@st.composite
def results(draw):
    classes = tuple(draw(st.lists(names, min_size=1, max_size=6, unique=True)))
    start = draw(indices)
    intervals = []
    for _ in range(draw(st.integers(0, 4))):
        a = draw(indices)
        intervals.append(Interval(a, a + draw(st.integers(1, 1000)), draw(names), draw(finite)))
    t0 = draw(st.floats(-1e9, 1e9))
    return Result(
        stream_id=draw(stream_ids),
        window_start=start,
        window_end=start + draw(st.integers(1, 10**6)),
        fs=draw(st.floats(1, 20000)),
        t_start=t0,
        t_end=t0 + draw(st.floats(0, 1e6)),
        model_id=draw(names),
        model_version=draw(names),
        classes=classes,
        probs=tuple(draw(st.lists(st.floats(0, 1), min_size=len(classes), max_size=len(classes)))),
        intervals=tuple(intervals),
        flags=tuple(draw(st.lists(st.sampled_from(["gap", "duplicate", "out_of_order", "resync"]), unique=True))),
        timing=draw(st.dictionaries(names, finite, max_size=4)),
        alarms=(alarms := tuple(draw(st.lists(st.sampled_from(classes), unique=True, max_size=len(set(classes)))))),
        located=tuple(a for a in alarms if draw(st.booleans())),
    )


statuses = st.builds(
    Status,
    stream_id=stream_ids,
    level=st.sampled_from(["info", "warning", "refused"]),
    reason=names,
    message=st.text(max_size=200),
    at=finite,
)
messages = st.one_of(chunks(), results(), statuses)

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("contiguous", [True, False])
@given(data=st.data())
@settings(max_examples=15, deadline=None)
def test_chunk_round_trip_every_dtype(dtype, byteorder, contiguous, data):
    chunk = data.draw(chunks(dtype=dtype, byteorder=byteorder, contiguous=contiguous))
    back = decode_chunk(encode(chunk))
    assert back == chunk
    assert back.samples.dtype == np.dtype(dtype).newbyteorder("<")
    assert not back.samples.flags.writeable


def test_big_endian_strided_array_goes_out_little_endian_c_order():
    base = np.arange(48, dtype=">f8").reshape(6, 8)
    view = base[::2, 1::3]  # (3, 3), big-endian, not contiguous
    chunk = make_chunk(leads=("I", "II", "III"), samples=view)
    wire = as_map(chunk)
    assert wire["dtype"] == "<f8" and wire["shape"] == [3, 3]
    assert wire["data"] == np.ascontiguousarray(view, dtype="<f8").tobytes()
    np.testing.assert_array_equal(decode_chunk(encode(chunk)).samples, view)


@given(results())
@settings(max_examples=100, deadline=None)
def test_result_round_trip(result):
    back = decode(encode(result))
    assert back == result
    assert isinstance(back.classes, tuple) and isinstance(back.probs, tuple) and isinstance(back.flags, tuple)
    assert all(isinstance(iv, Interval) for iv in back.intervals)


@given(statuses)
@settings(max_examples=100, deadline=None)
def test_status_round_trip(status):
    assert decode(encode(status)) == status


def test_wire_layout_is_a_versioned_map():
    m = as_map(make_chunk())
    assert m["v"] == WIRE_VERSION and m["kind"] == "chunk"
    assert as_map(make_result())["kind"] == "result"
    assert as_map(make_status())["kind"] == "status"


def test_unknown_extra_keys_are_ignored():
    for msg in (make_chunk(), make_result(), make_status()):
        m = as_map(msg) | {"added_in_a_later_build": [1, {"x": 2}]}
        assert decode(pack(m)) == msg


def test_constructor_validates_and_freezes_samples():
    with pytest.raises(WireError, match=r"chunk\.fs=0\.0 is outside 1\.\.20000 Hz"):
        make_chunk(fs=0)
    chunk = make_chunk()
    assert not chunk.samples.flags.writeable
    with pytest.raises(WireError, match="outside 0..1"):
        make_result(probs=(0.5, 0.5, 1.5))


def test_decode_chunk_refuses_other_kinds():
    with pytest.raises(WireError, match="expected a chunk, got a result"):
        decode_chunk(encode(make_result()))


# --- malformed input, one kind per test ---------------------------------------------------


def chunk_with(**fields) -> bytes:
    return pack(as_map(make_chunk()) | fields)


def test_garbage_bytes():
    with pytest.raises(WireError, match="not msgpack"):
        decode(b"\xc1\x00\xff garbage")
    with pytest.raises(WireError, match="not msgpack"):
        decode(encode(make_chunk())[:-3])  # truncated
    with pytest.raises(WireError, match="trailing bytes"):
        decode(encode(make_status()) + b"\x00")


def test_non_map_top_level():
    with pytest.raises(WireError, match="top level is list"):
        decode(pack([1, "chunk"]))


def test_str_for_int():
    with pytest.raises(WireError, match=r"chunk\.seq must be an int, got str"):
        decode(chunk_with(seq="3"))


def test_bool_for_int():
    with pytest.raises(WireError, match=r"chunk\.start must be an int, got bool"):
        decode(chunk_with(start=True))
    with pytest.raises(WireError, match="wire version must be an int, got bool"):
        decode(chunk_with(v=True))


def test_float_for_str():
    with pytest.raises(WireError, match=r"chunk\.stream_id must be a str, got float"):
        decode(chunk_with(stream_id=1.5))


def test_missing_key():
    m = as_map(make_result())
    del m["probs"]
    with pytest.raises(WireError, match="result message has no 'probs' key"):
        decode(pack(m))


def test_shape_size_mismatch():
    with pytest.raises(WireError, match=r"chunk\.data holds 10 bytes, shape \[2, 3\] of <f4 needs 24"):
        decode(chunk_with(shape=[2, 3], data=b"\x00" * 10))
    with pytest.raises(WireError, match="2 rows but chunk.leads names 3 leads"):
        decode(chunk_with(leads=["I", "II", "III"]))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_samples(bad):
    samples = np.zeros((2, 4), dtype="<f4")
    samples[1, 2] = bad
    with pytest.raises(WireError, match="1 NaN/inf values"):
        decode(chunk_with(data=samples.tobytes(), shape=[2, 4]))
    with pytest.raises(WireError, match="NaN/inf"):
        make_chunk(samples=samples)


@pytest.mark.parametrize("fs", [0, -1, 1e9, math.nan])
def test_absurd_fs(fs):
    with pytest.raises(WireError, match=r"chunk\.fs=.* is outside 1\.\.20000 Hz"):
        decode(chunk_with(fs=fs))


def test_unknown_version():
    with pytest.raises(WireError, match=r"unknown wire version 7 \(this build speaks 1\)"):
        decode(chunk_with(v=7))


def test_unknown_kind():
    with pytest.raises(WireError, match="unknown message kind 'heartbeat'"):
        decode(chunk_with(kind="heartbeat"))


def test_too_many_leads():
    leads = [f"L{i}" for i in range(33)]
    data = np.zeros((33, 1), dtype="<f4")
    with pytest.raises(WireError, match=r"chunk\.leads has 33 items, at most 32"):
        decode(chunk_with(leads=leads, shape=[33, 1], data=data.tobytes()))


def test_empty_stream_id():
    with pytest.raises(WireError, match=r"chunk\.stream_id must not be empty"):
        decode(chunk_with(stream_id=""))
    with pytest.raises(WireError, match="printable ASCII without spaces"):
        decode(chunk_with(stream_id="bed 7"))


def test_probs_classes_length_mismatch():
    with pytest.raises(WireError, match=r"result\.probs has 2 values for 3 classes"):
        decode(pack(as_map(make_result()) | {"probs": [0.5, 0.5]}))


def test_alarms_must_name_classes_and_may_be_missing():
    with pytest.raises(WireError, match=r"result\.alarms names 'X', which is not one of result\.classes"):
        decode(pack(as_map(make_result()) | {"alarms": ["X"]}))
    m = as_map(make_result())
    del m["alarms"]  # a sender from before the field: no alarms, not an error
    assert decode(pack(m)).alarms == ()



def test_located_must_be_alarmed_and_may_be_missing():
    m = as_map(make_result())
    with pytest.raises(WireError, match=r"result\.located names 'V', which is not one of result\.alarms"):
        decode(pack(m | {"alarms": [], "located": ["V"]}))
    assert decode(pack(m | {"alarms": ["V"], "located": ["V"]})).located == ("V",)
    m.pop("located", None)  # a sender from before the field: nothing located, not an error
    assert decode(pack(m)).located == ()


def test_bad_interval_names_its_index():
    m = as_map(make_result())
    m["intervals"][1]["end"] = m["intervals"][1]["start"]
    with pytest.raises(WireError, match=r"result\.intervals\[1\]: interval\.start=5000 must be < interval\.end=5000"):
        decode(pack(m))


# --- decoder fuzz ---------------------------------------------------------------------------


@given(st.binary(max_size=512))
@FUZZ
def test_fuzz_random_bytes(data):
    assert_decodes_or_wire_error(data)


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
)


@given(st.one_of(chunks(), results()), st.lists(mutations, min_size=1, max_size=4))
@FUZZ
def test_fuzz_mutated_bytes(msg, ops):
    data = bytearray(encode(msg))
    for op, pos, byte in ops:
        pos %= len(data) + 1
        if op == "flip" and pos < len(data):
            data[pos] ^= byte
        elif op == "insert":
            data.insert(pos, byte)
        elif op == "delete" and pos < len(data):
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    assert_decodes_or_wire_error(bytes(data))


@given(messages, st.data())
@FUZZ
def test_fuzz_mutated_fields(msg, data):
    m = as_map(msg)
    key = data.draw(st.sampled_from(sorted(m)))
    action = data.draw(st.sampled_from(["replace", "delete", "replace_nested"]))
    if action == "delete":
        del m[key]
    elif action == "replace_nested" and isinstance(m[key], list) and m[key]:
        m[key][data.draw(st.integers(0, len(m[key]) - 1))] = data.draw(msgpack_values)
    else:
        m[key] = data.draw(msgpack_values)
    out = assert_decodes_or_wire_error(pack(m))
    if action == "delete" and key not in ("alarms", "located"):  # the optional keys (see their own tests above)
        assert out is None, f"decoded without {key!r}"
