"""Load WFDB records with their reference beat annotations, and the AAMI EC57 class mapping.

Written for the MIT-BIH Arrhythmia Database but not tied to it: any WFDB record with an
`.atr` annotation file loads (other sampling rates, lead counts, PhysioNet databases).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from stream_ecg.data.locate import mitdb_dir

AAMI_CLASSES = ("N", "S", "V", "F", "Q")

# AAMI EC57 / de Chazal et al. 2004. The last four entries are WFDB beat codes absent from
# MIT-BIH but used by other PhysioNet databases (B: bundle branch block, n: supraventricular
# escape, r: R-on-T PVC, ?: unclassified beat); they map the way their MIT-BIH siblings do.
SYMBOL_TO_AAMI: dict[str, str] = {
    "N": "N", "L": "N", "R": "N", "e": "N", "j": "N",
    "A": "S", "a": "S", "J": "S", "S": "S",
    "V": "V", "E": "V",
    "F": "F",
    "/": "Q", "f": "Q", "Q": "Q",
    "B": "N", "n": "N", "r": "V", "?": "Q",
}
BEAT_SYMBOLS = frozenset(SYMBOL_TO_AAMI)

PACED_RECORDS = ("102", "104", "107", "217")
ALL_RECORDS: tuple[str, ...] = (
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "111", "112",
    "113", "114", "115", "116", "117", "118", "119", "121", "122", "123", "124", "200",
    "201", "202", "203", "205", "207", "208", "209", "210", "212", "213", "214", "215",
    "217", "219", "220", "221", "222", "223", "228", "230", "231", "232", "233", "234",
)
# de Chazal et al. 2004 inter-patient split; the 4 paced records are in neither half.
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
       "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
       "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")

_TO_MV = {"mv": 1.0, "uv": 1e-3, "μv": 1e-3, "µv": 1e-3, "v": 1e3}


class RecordNotFound(FileNotFoundError):
    """A WFDB record (header, signal or .atr annotations) is not in the directory searched."""


@dataclass(frozen=True)
class Beats:
    """Reference beat annotations only: R-peak sample indices and WFDB beat symbols."""

    samples: np.ndarray
    symbols: np.ndarray

    def aami(self) -> np.ndarray:
        """AAMI class letter (N S V F Q) per beat."""
        return np.array([SYMBOL_TO_AAMI[s] for s in self.symbols.tolist()], dtype="<U1")

    def extents(self, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """Half-open [start, end) of each beat: halfway to the neighbouring R peaks.

        The first and last beats reuse their one known half-RR on the missing side, clipped
        to the record; a lone beat spans the whole record. Consecutive beats tile exactly.
        """
        r = self.samples
        if len(r) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(r) == 1:
            return np.zeros(1, np.int64), np.full(1, n_samples, np.int64)
        mid = (r[:-1] + r[1:]) // 2
        first = max(r[0] - (mid[0] - r[0]), 0)
        last = min(r[-1] + (r[-1] - mid[-1]), n_samples)
        starts = np.concatenate([[first], mid]).astype(np.int64)
        ends = np.concatenate([mid, [last]]).astype(np.int64)
        return starts, np.maximum(ends, starts)

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class Record:
    """One record: signal in float32 mV, shape (n_leads, n_samples), plus its beats."""

    name: str
    fs: float
    leads: tuple[str, ...]
    signal: np.ndarray
    beats: Beats
    units: tuple[str, ...] = field(default=())


def _resolve_dir(data_dir: Path | str | None) -> Path:
    return mitdb_dir() if data_dir is None else Path(data_dir)


def _require(name: str, directory: Path, suffix: str) -> None:
    if not (directory / f"{name}{suffix}").is_file():
        raise RecordNotFound(
            f"record {name!r}: {name}{suffix} not found in {directory}; "
            "check the record name and the data directory (STREAM_ECG_MITDB)."
        )


def load_beats(name: str, data_dir: Path | str | None = None) -> Beats:
    """Beat annotations of a record without reading its signal (cheap: for counting)."""
    directory = _resolve_dir(data_dir)
    _require(name, directory, ".atr")
    ann = wfdb.rdann(str(directory / name), "atr")
    symbols = np.asarray(ann.symbol, dtype="<U1")
    keep = np.isin(symbols, list(BEAT_SYMBOLS))
    return Beats(samples=np.asarray(ann.sample, dtype=np.int64)[keep], symbols=symbols[keep])


def load_rhythms(name: str, data_dir: Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rhythm annotations of a record: the samples where a rhythm starts and its label ("(N", "(AFIB", ...), in order."""
    directory = _resolve_dir(data_dir)
    _require(name, directory, ".atr")
    ann = wfdb.rdann(str(directory / name), "atr")
    pick = [k for k, (sym, aux) in enumerate(zip(ann.symbol, ann.aux_note)) if sym == "+" and aux.strip("\x00 ")]
    return (np.asarray(ann.sample, dtype=np.int64)[pick],
            np.asarray([ann.aux_note[k].strip("\x00 ") for k in pick], dtype=object))


def record_length(name: str, data_dir: Path | str | None = None) -> int:
    """Samples per signal, from the header alone."""
    directory = _resolve_dir(data_dir)
    _require(name, directory, ".hea")
    return int(wfdb.rdheader(str(directory / name)).sig_len)


def load_record(name: str, data_dir: Path | str | None = None) -> Record:
    """Read a WFDB record and its `.atr` beats; signals are converted to float32 millivolts."""
    directory = _resolve_dir(data_dir)
    _require(name, directory, ".hea")
    _require(name, directory, ".atr")
    try:
        rec = wfdb.rdrecord(str(directory / name), physical=True, return_res=32)
    except FileNotFoundError as exc:
        raise RecordNotFound(
            f"record {name!r}: signal file missing in {directory} ({exc})."
        ) from exc
    signal = np.ascontiguousarray(rec.p_signal.T, dtype=np.float32)
    units = []
    for i, unit in enumerate(rec.units or ["mV"] * rec.n_sig):
        scale = _TO_MV.get((unit or "mV").strip().lower())
        if scale is not None and scale != 1.0:
            signal[i] *= np.float32(scale)
        units.append("mV" if scale is not None else unit)
    return Record(
        name=name,
        fs=float(rec.fs),
        leads=tuple(rec.sig_name),
        signal=signal,
        beats=load_beats(name, directory),
        units=tuple(units),
    )


def aami_counts(records: Iterable[str], data_dir: Path | str | None = None) -> dict[str, int]:
    """Beats per AAMI class summed over `records` (whole records, every annotated beat)."""
    counts = dict.fromkeys(AAMI_CLASSES, 0)
    for name in records:
        classes, n = np.unique(load_beats(name, data_dir).aami(), return_counts=True)
        for cls, k in zip(classes.tolist(), n.tolist()):
            counts[cls] += k
    return counts
