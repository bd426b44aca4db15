"""ECG preprocessing shared by the trainer and the live runtime: resample, band-pass, normalise.

Everything is causal and chunk-exact: `preprocess` on a whole record is literally the streaming
`StreamPreprocessor` fed one chunk, so what the model was trained on is what it is served.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.signal
import soxr

from .morphology import RESIDUAL_CHANNEL, beat_residual
from .rhythm import PEAK_DETECTORS, RHYTHM_CHANNELS, WINDOW_CHANNELS, RRHistory, add_rhythm, r_peaks

__all__ = [
    "DspConfig",
    "DspError",
    "FilterState",
    "StreamPreprocessor",
    "StreamResampler",
    "design_sos",
    "filter_chunk",
    "normalise_window",
    "preprocess",
    "window_input",
]

_SOXR_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


class DspError(ValueError):
    """Bad preprocessing configuration or input shape; the message says what to change."""


@dataclass(frozen=True)
class DspConfig:
    """Preprocessing contract stored in the model card; filters are designed at `fs`."""

    fs: float = 360.0
    highpass_hz: float = 0.5
    lowpass_hz: float = 40.0
    order: int = 2
    notch_hz: float | None = None
    notch_q: float = 30.0
    norm_eps: float = 1e-3
    rhythm: bool = False  # append the RR-context channels of `stream_ecg.rhythm` to each window
    # > 0: RR relative to the median of the stream's last this-many RR intervals (per-stream state), not the window's
    rhythm_context: int = 0
    rhythm_both: bool = False  # with rhythm_context: keep the window-relative channels too (four rhythm channels)
    beat_residual: bool = False  # append the first lead minus the window's median beat (`stream_ecg.morphology`)
    peak_detector: str = "energy"  # the R-peak detector of every derived channel and interval rule (rhythm.PEAK_DETECTORS)

    def __post_init__(self) -> None:
        nyquist = self.fs / 2
        if not self.fs > 0:
            raise DspError(f"fs must be > 0 Hz, got {self.fs}")
        if not 0 < self.highpass_hz < self.lowpass_hz:
            raise DspError(
                f"need 0 < highpass_hz < lowpass_hz, got {self.highpass_hz} and {self.lowpass_hz}"
            )
        if not self.lowpass_hz < nyquist:
            raise DspError(
                f"lowpass_hz {self.lowpass_hz} must be below Nyquist ({nyquist} Hz at fs={self.fs}); "
                "lower it or raise fs"
            )
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise DspError(f"order must be an integer >= 1, got {self.order!r}")
        if self.notch_hz is not None and not 0 < self.notch_hz < nyquist:
            raise DspError(f"notch_hz {self.notch_hz} must be in (0, {nyquist}) Hz, or None")
        if not self.notch_q > 0:
            raise DspError(f"notch_q must be > 0, got {self.notch_q}")
        if not self.norm_eps > 0:
            raise DspError(f"norm_eps must be > 0 (mV), got {self.norm_eps}")
        if isinstance(self.rhythm_context, bool) or not isinstance(self.rhythm_context, int) or self.rhythm_context < 0:
            raise DspError(f"rhythm_context must be an integer >= 0 (RR intervals), got {self.rhythm_context!r}")
        if self.rhythm_context and not self.rhythm:
            raise DspError("rhythm_context needs rhythm=True: it sets the reference of the rhythm channels")
        if self.peak_detector not in PEAK_DETECTORS:
            raise DspError(f"peak_detector {self.peak_detector!r}: expected one of {PEAK_DETECTORS}")
        if self.rhythm_both and not self.rhythm_context:
            raise DspError("rhythm_both needs rhythm_context > 0: without a stream reference there is one set of channels")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def new_history(self) -> RRHistory | None:
        """A fresh per-stream RR history when the rhythm channels use one, else None."""
        return RRHistory(self.rhythm_context, self.fs) if self.rhythm and self.rhythm_context else None

    @property
    def rhythm_channels(self) -> tuple[str, ...]:
        """Names of the rhythm channels appended after the leads (none without `rhythm`)."""
        if not self.rhythm:
            return ()
        return RHYTHM_CHANNELS + (WINDOW_CHANNELS if self.rhythm_both else ())

    @property
    def extra_channels(self) -> tuple[str, ...]:
        """Names of the channels appended after the leads, in order: rhythm, then the beat residual."""
        return self.rhythm_channels + ((RESIDUAL_CHANNEL,) if self.beat_residual else ())

    def channels(self, n_leads: int) -> int:
        """Model input channels for n_leads ECG leads."""
        return n_leads + len(self.extra_channels)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DspConfig:
        """Strict: an unknown key means the card was written by a newer/other preprocessing."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise DspError(
                f"unknown DspConfig keys {sorted(unknown)}; the model card needs a matching stream-ecg"
            )
        return cls(**d)


@functools.lru_cache(maxsize=32)
def design_sos(cfg: DspConfig) -> np.ndarray:
    """Band-pass (+ optional notch) as second-order sections at cfg.fs; read-only because cached."""
    sos = scipy.signal.butter(
        cfg.order, [cfg.highpass_hz, cfg.lowpass_hz], btype="bandpass", fs=cfg.fs, output="sos"
    )
    if cfg.notch_hz is not None:
        b, a = scipy.signal.iirnotch(cfg.notch_hz, cfg.notch_q, fs=cfg.fs)
        sos = np.vstack([sos, scipy.signal.tf2sos(b, a)])
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    sos.setflags(write=False)
    return sos


@dataclass
class FilterState:
    """sosfilt state for all leads, shape (n_sections, n_leads, 2), float64."""

    zi: np.ndarray


def _check_2d(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise DspError(f"{what} must be 2-D (n_leads, n_samples), got shape {x.shape}")
    return x


def filter_chunk(
    x: np.ndarray, sos: np.ndarray, state: FilterState | None
) -> tuple[np.ndarray, FilterState | None]:
    """Causal sosfilt of one (n_leads, n) chunk in float64; returns (y float64, new state).

    state None starts a stream at steady state for each lead's first sample, so a DC offset gives
    no start-up transient. An empty chunk with state None returns state None (nothing seen yet).
    """
    x = _check_2d(x, "filter input").astype(np.float64, copy=False)
    # scipy's sosfilt needs a writable sos; design_sos hands out a read-only cached array.
    sos = np.array(sos, dtype=np.float64)
    if sos.ndim != 2 or sos.shape[1] != 6:
        raise DspError(f"sos must have shape (n_sections, 6), got {sos.shape}")
    if state is None:
        if x.shape[1] == 0:
            return x.copy(), None
        zi = scipy.signal.sosfilt_zi(sos)[:, None, :] * x[None, :, 0, None]
    else:
        zi = state.zi
        if zi.shape != (sos.shape[0], x.shape[0], 2):
            raise DspError(
                f"filter state shape {zi.shape} does not match {sos.shape[0]} sections x "
                f"{x.shape[0]} leads; start a new stream with state=None"
            )
        if x.shape[1] == 0:
            # sosfilt cannot take an empty axis; an empty chunk leaves the state as it was.
            return x.copy(), FilterState(zi=zi.copy())
    y, zf = scipy.signal.sosfilt(sos, x, axis=-1, zi=zi)
    return y, FilterState(zi=zf)


class StreamResampler:
    """Chunked resampling through soxr.ResampleStream; chunk-exact and aligned to the input.

    Output sample k is at time k / out_fs like the input's first sample at 0 (no shift to undo);
    soxr only holds back `delay` samples until more input arrives or `last=True` flushes them.
    The first sample per lead is subtracted before and added back after resampling, so edges are
    padded with that value rather than zero: a DC offset resamples without edge ringing. Hence
    the output equals soxr.resample(x - x[:, :1]) + x[:, :1] of the concatenated input exactly.
    """

    def __init__(
        self,
        in_fs: float,
        out_fs: float,
        n_leads: int,
        quality: str = "HQ",
        dtype: type = np.float32,
    ) -> None:
        if not (in_fs > 0 and out_fs > 0):
            raise DspError(f"sampling rates must be > 0 Hz, got in_fs={in_fs}, out_fs={out_fs}")
        if n_leads < 1:
            raise DspError(f"n_leads must be >= 1, got {n_leads}")
        if quality not in _SOXR_QUALITIES:
            raise DspError(f"quality must be one of {_SOXR_QUALITIES}, got {quality!r}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise DspError(f"dtype must be float32 or float64, got {dtype}")
        self.in_fs = float(in_fs)
        self.out_fs = float(out_fs)
        self.n_leads = n_leads
        self.quality = quality
        self.dtype = np.dtype(dtype)
        self.passthrough = self.in_fs == self.out_fs
        self.reset()

    def reset(self) -> None:
        """Start a new, unrelated stream."""
        self._soxr = (
            None
            if self.passthrough
            else soxr.ResampleStream(
                self.in_fs, self.out_fs, self.n_leads, dtype="float64", quality=self.quality
            )
        )
        self._offset: np.ndarray | None = None
        self._finished = False

    @property
    def delay(self) -> float:
        """Output samples soxr is holding back (arrive with later input or the last=True flush)."""
        return 0.0 if self._soxr is None else float(self._soxr.delay())

    def process(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """(n_leads, n) at in_fs -> (n_leads, m) at out_fs; m may be 0 while soxr fills up."""
        x = _check_2d(x, "resampler input")
        if x.shape[0] != self.n_leads:
            raise DspError(f"expected {self.n_leads} leads, got {x.shape[0]}; reset for a new layout")
        if self._finished:
            raise DspError("stream already ended with last=True; call reset() to start a new one")
        self._finished = last
        if self.passthrough:
            return x.astype(self.dtype, copy=True)
        x = x.astype(np.float64, copy=False)
        if self._offset is None and x.shape[1] > 0:
            self._offset = x[:, :1].copy()
        offset = self._offset if self._offset is not None else 0.0
        y = self._soxr.resample_chunk(np.ascontiguousarray((x - offset).T), last=last)
        return (y.T + offset).astype(self.dtype)


class StreamPreprocessor:
    """Per-stream state: resample to cfg.fs, then band-pass (+notch). Reset on a gap."""

    def __init__(self, cfg: DspConfig, in_fs: float, n_leads: int) -> None:
        self.cfg = cfg
        self.in_fs = float(in_fs)
        self.n_leads = n_leads
        self._sos = design_sos(cfg)
        self._resampler = StreamResampler(in_fs, cfg.fs, n_leads, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget filter and resampler state; never glue signal across a sequence gap."""
        self._resampler.reset()
        self._state: FilterState | None = None
        self._samples_out = 0

    @property
    def samples_out(self) -> int:
        """Output samples emitted since construction or the last reset (absolute index base)."""
        return self._samples_out

    def process(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """(n_leads, n) raw mV at in_fs -> (n_leads, m) float32 at cfg.fs, filtered causally."""
        x = _check_2d(x, "ECG chunk")
        if x.shape[0] != self.n_leads:
            raise DspError(f"expected {self.n_leads} leads, got {x.shape[0]}")
        if not np.isfinite(x).all():
            raise DspError("chunk has NaN/inf samples; drop it and reset() the stream")
        r = self._resampler.process(x, last=last)
        y, self._state = filter_chunk(r, self._sos, self._state)
        self._samples_out += y.shape[1]
        return y.astype(np.float32)


def preprocess(signal: np.ndarray, in_fs: float, cfg: DspConfig) -> np.ndarray:
    """Whole-record batch path: the streaming preprocessor fed a single final chunk."""
    signal = _check_2d(signal, "signal")
    return StreamPreprocessor(cfg, in_fs, signal.shape[0]).process(signal, last=True)


def normalise_window(w: np.ndarray, eps: float) -> np.ndarray:
    """Per-lead z-score over the last axis of (..., n_leads, n); std floored at eps; float32."""
    w = np.asarray(w)
    if w.ndim < 2 or w.shape[-1] == 0:
        raise DspError(f"window must be (..., n_leads, n) with n >= 1, got shape {w.shape}")
    if not eps > 0:
        raise DspError(f"eps must be > 0, got {eps}")
    w64 = w.astype(np.float64, copy=False)
    mean = w64.mean(axis=-1, keepdims=True)
    std = np.maximum(w64.std(axis=-1, keepdims=True), eps)
    return ((w64 - mean) / std).astype(np.float32)


def window_input(
    w: np.ndarray, cfg: DspConfig, starts: np.ndarray | int | None = None, history: RRHistory | None = None
) -> np.ndarray:
    """Preprocessed window(s) (..., n_leads, n) -> what the model eats: z-scored leads, then the
    rhythm channels and the beat residual if the card asks.

    With `cfg.rhythm_context` the windows must be one stream's, in order, at absolute `starts`, and
    `history` is that stream's `RRHistory` (a fresh one, i.e. the stream begins here, when None).
    """
    return window_input_with_peaks(w, cfg, starts, history)[0]


def window_input_with_peaks(
    w: np.ndarray, cfg: DspConfig, starts: np.ndarray | int | None = None, history: RRHistory | None = None
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """`window_input`, and the R peaks it found on each window's first z-scored lead (`rhythm.r_peaks`, in window
    order; None when the card asks for no derived channel, so none were found). They are the peaks every later step
    would find on the model input's first lead: the stream's RR memory, the fusion and the interval rules take them
    instead of searching each window again."""
    x = normalise_window(w, cfg.norm_eps)
    if not cfg.extra_channels:
        return x, None
    flat = x.reshape(-1, *x.shape[-2:])
    peaks = [r_peaks(f[0], cfg.fs, cfg.peak_detector) for f in flat]  # once per window, shared by every derived channel
    out = flat
    if cfg.rhythm:
        if cfg.rhythm_context:
            if starts is None:
                raise DspError("rhythm_context needs the windows' absolute start samples (stream order)")
            starts = np.atleast_1d(np.asarray(starts, np.int64))
            history = history if history is not None else cfg.new_history()
        else:
            starts, history = None, None
        out = add_rhythm(flat, cfg.fs, peaks, history, starts, cfg.rhythm_both)
    if cfg.beat_residual:
        res = np.stack([beat_residual(f[0], cfg.fs, p) for f, p in zip(flat, peaks)])[:, None]
        out = np.concatenate([out, res], axis=1)
    return out.reshape(*x.shape[:-2], -1, x.shape[-1]), peaks
