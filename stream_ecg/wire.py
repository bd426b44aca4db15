"""Versioned msgpack wire schema between bed gateways, the ingest worker and subscribers.

Every message is one msgpack map ``{"v": WIRE_VERSION, "kind": ..., **fields}``. The dataclasses
validate themselves when built and ``decode`` builds them through the same constructors, so a
gateway cannot send what the worker would refuse. Unknown keys are ignored (newer senders within
one version); missing keys, wrong types and out-of-range values raise ``WireError``, except a
Result's ``alarms`` and ``located``, added within version 1, which read as none when a sender omits them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, NoReturn

import msgpack
import numpy as np

__all__ = [
    "WIRE_VERSION",
    "WireError",
    "Chunk",
    "Interval",
    "Result",
    "Status",
    "Message",
    "encode",
    "decode",
    "decode_chunk",
]

WIRE_VERSION = 1

MAX_STREAM_ID_LEN = 128
MAX_LEADS = 32
MAX_LEAD_NAME_LEN = 32
MAX_VALUES = 2**22
MIN_FS, MAX_FS = 1.0, 20000.0
MAX_NAME_LEN = 128  # model ids and versions, class and interval labels, flags, timing keys, reasons
MAX_CLASSES = 1024
MAX_INTERVALS = 4096
MAX_FLAGS = 64
MAX_TIMING = 64
MAX_MESSAGE_LEN = 4096
STATUS_LEVELS = ("info", "warning", "refused")

_INT_END = 2**63  # every index and sequence number must fit a signed 64-bit int downstream
_WIRE_DTYPES = {name: np.dtype(name) for name in ("<f4", "<f8", "<i2", "<i4")}
_SAMPLE_DTYPES = {(d.kind, d.itemsize) for d in _WIRE_DTYPES.values()}

# The largest legal message is one chunk of MAX_VALUES float64 values; everything else is small,
# so these limits stop a hostile length prefix from allocating more than that. No ext types.
_UNPACK_LIMITS = dict(
    max_bin_len=MAX_VALUES * 8,
    max_str_len=64 * 1024,
    max_array_len=64 * 1024,
    max_map_len=1024,
    max_ext_len=0,
)

_set = object.__setattr__  # frozen dataclasses normalise their own fields in __post_init__


class WireError(ValueError):
    """The one error any malformed message raises; the message says what was wrong."""


# --- field checks shared by the constructors and the decoder --------------------------------


def _fail(text: str) -> NoReturn:
    raise WireError(text) from None  # the one-line text is the whole story; no chained traceback


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(where: str, value: Any, lo: int = 0, hi: int = _INT_END) -> int:
    # bool is an int subclass; True where a sequence number belongs is a sender bug, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(f"{where} must be an int, got {type(value).__name__}")
    value = int(value)
    if not lo <= value < hi:
        _fail(f"{where}={value} is outside {lo}..{hi - 1}")
    return value


def _float(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(f"{where} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except (OverflowError, ValueError, TypeError):
        _fail(f"{where}={_show(value)} does not fit a float")
    if not math.isfinite(value):
        _fail(f"{where}={value} is not finite")
    return value


def _fs(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(f"{where} must be a number, got {type(value).__name__}")
    try:
        fs = float(value)
    except (OverflowError, ValueError, TypeError):
        fs = math.inf
    if not MIN_FS <= fs <= MAX_FS:  # also false for nan
        _fail(f"{where}={fs} is outside {MIN_FS:g}..{MAX_FS:g} Hz (absurd fs)")
    return fs


def _str(where: str, value: Any, max_len: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        _fail(f"{where} must be a str, got {type(value).__name__}")
    if not value and not empty:
        _fail(f"{where} must not be empty")
    if len(value) > max_len:
        _fail(f"{where} is {len(value)} chars long, at most {max_len} allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(f"{where}={_show(value)} is not valid UTF-8 text")
    return str(value)


def _stream_id(where: str, value: Any) -> str:
    value = _str(where, value, MAX_STREAM_ID_LEN)
    # It becomes the ZeroMQ topic, so it must be a plain token subscribers can type.
    if not all("!" <= ch <= "~" for ch in value):
        _fail(f"{where}={_show(value)} must be printable ASCII without spaces")
    return value


def _seq(where: str, value: Any, max_len: int) -> tuple:
    if not isinstance(value, (list, tuple)):
        _fail(f"{where} must be a list, got {type(value).__name__}")
    if len(value) > max_len:
        _fail(f"{where} has {len(value)} items, at most {max_len} allowed")
    return tuple(value)


def _names(where: str, value: Any, max_count: int, max_len: int, min_count: int = 0) -> tuple[str, ...]:
    items = _seq(where, value, max_count)
    if len(items) < min_count:
        _fail(f"{where} has {len(items)} items, at least {min_count} needed")
    names = tuple(_str(f"{where}[{i}]", item, max_len) for i, item in enumerate(items))
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        _fail(f"{where} names {dup!r} more than once")
    return names


def _samples(leads: tuple[str, ...], value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        _fail(f"chunk.samples must be a numpy array, got {type(value).__name__}")
    arr = value.view(np.ndarray)
    if (arr.dtype.kind, arr.dtype.itemsize) not in _SAMPLE_DTYPES:
        _fail(f"chunk.samples dtype {arr.dtype} is not one of float32, float64, int16, int32")
    if arr.ndim != 2:
        _fail(f"chunk.samples must be 2-D (n_leads, n_samples), got shape {list(arr.shape)}")
    n_leads, n_samples = arr.shape
    if n_leads != len(leads):
        _fail(f"chunk.samples has {n_leads} rows but chunk.leads names {len(leads)} leads")
    if n_samples < 1:
        _fail("chunk.samples holds no samples; send at least one per lead")
    if arr.size > MAX_VALUES:
        _fail(f"chunk.samples holds {arr.size} values, at most {MAX_VALUES} allowed; send smaller chunks")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            _fail(f"chunk.samples holds {bad} NaN/inf values; mark gaps at the gateway instead")
    arr = arr.view()
    arr.flags.writeable = False
    return arr


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Chunk:
    """A block of raw ECG from one bed: ``samples`` is (n_leads, n_samples) starting at ``start``.

    ``samples`` is always a read-only view (after ``decode``, into the received bytes); copy it
    before writing. Equality compares values, ignoring byte order.
    """

    stream_id: str
    seq: int
    start: int
    fs: float
    leads: tuple[str, ...]
    samples: np.ndarray
    sent_at: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "stream_id", _stream_id("chunk.stream_id", self.stream_id))
        _set(self, "seq", _int("chunk.seq", self.seq))
        _set(self, "start", _int("chunk.start", self.start))
        _set(self, "fs", _fs("chunk.fs", self.fs))
        leads = _names("chunk.leads", self.leads, MAX_LEADS, MAX_LEAD_NAME_LEN, min_count=1)
        _set(self, "leads", leads)
        samples = _samples(leads, self.samples)
        _set(self, "samples", samples)
        if self.start + samples.shape[1] > _INT_END:
            _fail(f"chunk.start={self.start} plus {samples.shape[1]} samples runs past 2**63")
        _set(self, "sent_at", _float("chunk.sent_at", self.sent_at))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Chunk):
            return NotImplemented
        a, b = self.samples, other.samples
        return (
            (self.stream_id, self.seq, self.start, self.fs, self.leads, self.sent_at)
            == (other.stream_id, other.seq, other.start, other.fs, other.leads, other.sent_at)
            and a.dtype.newbyteorder("<") == b.dtype.newbyteorder("<")
            and np.array_equal(a, b)
        )


@dataclass(frozen=True, slots=True)
class Interval:
    """An abnormal segment in absolute samples at the model rate, ``end`` exclusive."""

    start: int
    end: int
    label: str
    score: float

    def __post_init__(self) -> None:
        _set(self, "start", _int("interval.start", self.start))
        _set(self, "end", _int("interval.end", self.end))
        if self.start >= self.end:
            _fail(f"interval.start={self.start} must be < interval.end={self.end}")
        _set(self, "label", _str("interval.label", self.label, MAX_NAME_LEN))
        _set(self, "score", _float("interval.score", self.score))


@dataclass(frozen=True, slots=True)
class Result:
    """One inference window: class probabilities, abnormal intervals, quality flags and stamps."""

    stream_id: str
    window_start: int
    window_end: int
    fs: float
    t_start: float
    t_end: float
    model_id: str
    model_version: str
    classes: tuple[str, ...]
    probs: tuple[float, ...]
    intervals: tuple[Interval, ...] = ()
    flags: tuple[str, ...] = ()
    timing: dict[str, float] = field(default_factory=dict)
    alarms: tuple[str, ...] = ()  # the classes whose probability reached the model card's threshold in this window
    # the alarmed classes this window also placed at a beat: its interval rule marked at least one interval of the class
    # in it (published now, or already by an earlier window). An alarm without one is the window's probability alone.
    located: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "stream_id", _stream_id("result.stream_id", self.stream_id))
        _set(self, "window_start", _int("result.window_start", self.window_start))
        _set(self, "window_end", _int("result.window_end", self.window_end))
        if self.window_start >= self.window_end:
            _fail(f"result.window_start={self.window_start} must be < result.window_end={self.window_end}")
        _set(self, "fs", _fs("result.fs", self.fs))
        _set(self, "t_start", _float("result.t_start", self.t_start))
        _set(self, "t_end", _float("result.t_end", self.t_end))
        if self.t_start > self.t_end:
            _fail(f"result.t_start={self.t_start} is after result.t_end={self.t_end}")
        _set(self, "model_id", _str("result.model_id", self.model_id, MAX_NAME_LEN))
        _set(self, "model_version", _str("result.model_version", self.model_version, MAX_NAME_LEN))
        classes = _names("result.classes", self.classes, MAX_CLASSES, MAX_NAME_LEN, min_count=1)
        _set(self, "classes", classes)
        probs = _seq("result.probs", self.probs, MAX_CLASSES)
        if len(probs) != len(classes):
            _fail(f"result.probs has {len(probs)} values for {len(classes)} classes")
        probs = tuple(_float(f"result.probs[{i}]", p) for i, p in enumerate(probs))
        for i, p in enumerate(probs):
            if not 0.0 <= p <= 1.0:
                _fail(f"result.probs[{i}]={p} is outside 0..1")
        _set(self, "probs", probs)
        intervals = _seq("result.intervals", self.intervals, MAX_INTERVALS)
        for i, iv in enumerate(intervals):
            if not isinstance(iv, Interval):
                _fail(f"result.intervals[{i}] must be an Interval, got {type(iv).__name__}")
        _set(self, "intervals", intervals)
        _set(self, "flags", _names("result.flags", self.flags, MAX_FLAGS, MAX_NAME_LEN))
        if not isinstance(self.timing, dict):
            _fail(f"result.timing must be a map of str -> float, got {type(self.timing).__name__}")
        if len(self.timing) > MAX_TIMING:
            _fail(f"result.timing has {len(self.timing)} stamps, at most {MAX_TIMING} allowed")
        timing = {}
        for key, stamp in self.timing.items():
            key = _str("result.timing key", key, MAX_NAME_LEN)
            timing[key] = _float(f"result.timing[{key!r}]", stamp)
        _set(self, "timing", timing)
        alarms = _names("result.alarms", self.alarms, MAX_CLASSES, MAX_NAME_LEN)
        for name in alarms:
            if name not in classes:
                _fail(f"result.alarms names {name!r}, which is not one of result.classes {list(classes)}")
        _set(self, "alarms", alarms)
        located = _names("result.located", self.located, MAX_CLASSES, MAX_NAME_LEN)
        for name in located:
            if name not in alarms:
                _fail(f"result.located names {name!r}, which is not one of result.alarms {list(alarms)}")
        _set(self, "located", located)


@dataclass(frozen=True, slots=True)
class Status:
    """Out-of-band news about a stream, e.g. that it was refused and why."""

    stream_id: str
    level: str
    reason: str
    message: str
    at: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "stream_id", _stream_id("status.stream_id", self.stream_id))
        if not isinstance(self.level, str) or self.level not in STATUS_LEVELS:
            _fail(f"status.level={_show(self.level)} is not one of {', '.join(STATUS_LEVELS)}")
        _set(self, "reason", _str("status.reason", self.reason, MAX_NAME_LEN))
        _set(self, "message", _str("status.message", self.message, MAX_MESSAGE_LEN, empty=True))
        _set(self, "at", _float("status.at", self.at))


Message = Chunk | Result | Status


# --- encode -----------------------------------------------------------------------------------


def _chunk_map(c: Chunk) -> dict[str, Any]:
    # The wire is little-endian C order whatever the sender's array looks like.
    arr = np.ascontiguousarray(c.samples, dtype=c.samples.dtype.newbyteorder("<"))
    return {
        "stream_id": c.stream_id,
        "seq": c.seq,
        "start": c.start,
        "fs": c.fs,
        "leads": list(c.leads),
        "dtype": arr.dtype.str,
        "shape": list(arr.shape),
        "data": arr.tobytes(),
        "sent_at": c.sent_at,
    }


def _result_map(r: Result) -> dict[str, Any]:
    return {
        "stream_id": r.stream_id,
        "window_start": r.window_start,
        "window_end": r.window_end,
        "fs": r.fs,
        "t_start": r.t_start,
        "t_end": r.t_end,
        "model_id": r.model_id,
        "model_version": r.model_version,
        "classes": list(r.classes),
        "probs": list(r.probs),
        "intervals": [
            {"start": iv.start, "end": iv.end, "label": iv.label, "score": iv.score} for iv in r.intervals
        ],
        "flags": list(r.flags),
        "timing": dict(r.timing),
        "alarms": list(r.alarms),
        "located": list(r.located),
    }


def _status_map(s: Status) -> dict[str, Any]:
    return {"stream_id": s.stream_id, "level": s.level, "reason": s.reason, "message": s.message, "at": s.at}


def encode(msg: Message) -> bytes:
    """Serialise a (constructor-validated) message to one msgpack map."""
    if isinstance(msg, Chunk):
        kind, body = "chunk", _chunk_map(msg)
    elif isinstance(msg, Result):
        kind, body = "result", _result_map(msg)
    elif isinstance(msg, Status):
        kind, body = "status", _status_map(msg)
    else:
        raise TypeError(f"encode() takes a Chunk, Result or Status, not {type(msg).__name__}")
    return msgpack.packb({"v": WIRE_VERSION, "kind": kind, **body}, use_bin_type=True)


# --- decode -----------------------------------------------------------------------------------


def _get(m: dict, kind: str, key: str) -> Any:
    try:
        return m[key]
    except KeyError:
        _fail(f"{kind} message has no {key!r} key")


def _chunk_from(m: dict) -> Chunk:
    dtype_name = _get(m, "chunk", "dtype")
    if not isinstance(dtype_name, str) or dtype_name not in _WIRE_DTYPES:
        _fail(f"chunk.dtype={_show(dtype_name)} is not one of {', '.join(_WIRE_DTYPES)}")
    dtype = _WIRE_DTYPES[dtype_name]
    shape = _get(m, "chunk", "shape")
    if not isinstance(shape, list) or len(shape) != 2:
        _fail(f"chunk.shape must be [n_leads, n_samples], got {_show(shape)}")
    n_leads = _int("chunk.shape[0]", shape[0])
    n_samples = _int("chunk.shape[1]", shape[1])
    data = _get(m, "chunk", "data")
    if not isinstance(data, bytes):
        _fail(f"chunk.data must be msgpack bin, got {type(data).__name__}")
    need = n_leads * n_samples * dtype.itemsize
    if len(data) != need:
        _fail(f"chunk.data holds {len(data)} bytes, shape [{n_leads}, {n_samples}] of {dtype_name} needs {need}")
    samples = np.frombuffer(data, dtype=dtype).reshape(n_leads, n_samples)
    return Chunk(
        stream_id=_get(m, "chunk", "stream_id"),
        seq=_get(m, "chunk", "seq"),
        start=_get(m, "chunk", "start"),
        fs=_get(m, "chunk", "fs"),
        leads=_get(m, "chunk", "leads"),
        samples=samples,
        sent_at=_get(m, "chunk", "sent_at"),
    )


def _interval_from(i: int, m: Any) -> Interval:
    if not isinstance(m, dict):
        _fail(f"result.intervals[{i}] must be a map, got {type(m).__name__}")
    try:
        return Interval(*(_get(m, "interval", key) for key in ("start", "end", "label", "score")))
    except WireError as err:
        _fail(f"result.intervals[{i}]: {err}")


def _result_from(m: dict) -> Result:
    raw = _seq("result.intervals", _get(m, "result", "intervals"), MAX_INTERVALS)
    return Result(
        stream_id=_get(m, "result", "stream_id"),
        window_start=_get(m, "result", "window_start"),
        window_end=_get(m, "result", "window_end"),
        fs=_get(m, "result", "fs"),
        t_start=_get(m, "result", "t_start"),
        t_end=_get(m, "result", "t_end"),
        model_id=_get(m, "result", "model_id"),
        model_version=_get(m, "result", "model_version"),
        classes=_get(m, "result", "classes"),
        probs=_get(m, "result", "probs"),
        intervals=tuple(_interval_from(i, x) for i, x in enumerate(raw)),
        flags=_get(m, "result", "flags"),
        timing=_get(m, "result", "timing"),
        alarms=m.get("alarms", ()),  # optional: senders of wire version 1 before it was added omit it
        located=m.get("located", ()),  # optional likewise
    )


def _status_from(m: dict) -> Status:
    return Status(**{key: _get(m, "status", key) for key in ("stream_id", "level", "reason", "message", "at")})


_DECODERS = {"chunk": _chunk_from, "result": _result_from, "status": _status_from}


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except msgpack.ExtraData:
        _fail("not msgpack: trailing bytes after the message; send one message per frame")
    except msgpack.StackError:
        _fail("not msgpack: nested too deeply")
    except msgpack.FormatError:
        _fail("not msgpack: reserved or invalid type byte")
    except UnicodeDecodeError as err:
        _fail(f"not msgpack: a str is not valid UTF-8 ({err.reason} at byte {err.start})")
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as err:
        _fail(f"not msgpack: {err or type(err).__name__}")


def decode(data: bytes) -> Message:
    """Parse and validate one message; anything malformed raises ``WireError``, nothing else."""
    obj = _unpack(data)
    if not isinstance(obj, dict):
        _fail(f"top level is {type(obj).__name__}, expected a msgpack map")
    if "v" not in obj or "kind" not in obj:
        _fail("message has no 'v' (wire version) or 'kind' key; is the sender speaking stream-ecg?")
    version = obj["v"]
    if isinstance(version, bool) or not isinstance(version, int):
        _fail(f"wire version must be an int, got {type(version).__name__}")
    if version != WIRE_VERSION:
        _fail(f"unknown wire version {version} (this build speaks {WIRE_VERSION})")
    kind = obj["kind"]
    if not isinstance(kind, str) or kind not in _DECODERS:
        _fail(f"unknown message kind {_show(kind)} (expected chunk, result or status)")
    try:
        return _DECODERS[kind](obj)
    except WireError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        # A safety net for checks this module forgot; the cause is kept so tests can find them.
        raise WireError(f"malformed {kind}: {type(err).__name__}: {err}") from err


def decode_chunk(data: bytes) -> Chunk:
    """Decode a message the caller expects to be a Chunk (the ingest socket carries nothing else)."""
    msg = decode(data)
    if not isinstance(msg, Chunk):
        _fail(f"expected a chunk, got a {type(msg).__name__.lower()}")
    return msg
