"""Regenerate the bundled excerpt: the richest 5 minutes of MIT-BIH records 208, 232 and 100.

Run `python -m stream_ecg.data.make_excerpt` (needs the full database; see locate.mitdb_dir).
The excerpt lets tests, the demo and the replay tool run without the 100 MB database.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

from stream_ecg.data.locate import excerpt_dir, mitdb_dir

DURATION_S = 300
SEARCH_STEP_S = 1

ATTRIBUTION = (
    "Contains information from the MIT-BIH Arrhythmia Database, which is made available "
    "under the ODC Attribution License."
)
SOURCE = (
    "MIT-BIH Arrhythmia Database v1.0.0, PhysioNet, doi:10.13026/C2F305 "
    "(Moody & Mark 2001; Goldberger et al. 2000); license ODC-By 1.0"
)


@dataclass(frozen=True)
class ExcerptSpec:
    """Record to excerpt and the beat symbol whose count picks the 5-minute span."""

    record: str
    richest_in: str


EXCERPTS = (
    ExcerptSpec("208", "V"),
    ExcerptSpec("232", "A"),
    ExcerptSpec("100", "A"),
)


def richest_start(samples: np.ndarray, symbols: np.ndarray, symbol: str,
                  n_samples: int, span: int, step: int) -> int:
    """Start (a multiple of `step`) of the `span`-sample window with most `symbol` beats.

    Ties go to the earliest start, so regeneration is deterministic.
    """
    peaks = np.sort(samples[symbols == symbol])
    starts = np.arange(0, n_samples - span + 1, step)
    counts = np.searchsorted(peaks, starts + span) - np.searchsorted(peaks, starts)
    return int(starts[np.argmax(counts)])


def _hms(sample: int, fs: float) -> str:
    seconds = sample / fs
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:{seconds % 60:06.3f}"


def shifted_annotations(ann: wfdb.Annotation, start: int, stop: int) -> dict:
    """wrann keyword arguments for the annotations in [start, stop), shifted to start at 0.

    Rhythm annotations mark changes only, so the rhythm in force at the cut is restated at
    sample 0; otherwise the excerpt's opening beats would have no rhythm.
    """
    samples = np.asarray(ann.sample, np.int64)
    idx = np.flatnonzero((samples >= start) & (samples < stop)).tolist()
    rhythm_before = [i for i in range(len(samples)) if ann.symbol[i] == "+" and samples[i] < start]
    restate = rhythm_before and not (idx and ann.symbol[idx[0]] == "+" and samples[idx[0]] == start)
    pick = ([rhythm_before[-1]] if restate else []) + idx
    sample = np.array([0] * bool(restate) + [int(samples[i]) - start for i in idx], np.int64)
    return dict(
        sample=sample,
        symbol=[ann.symbol[i] for i in pick],
        subtype=np.asarray(ann.subtype, int)[pick],
        chan=np.asarray(ann.chan, int)[pick],
        num=np.asarray(ann.num, int)[pick],
        aux_note=[ann.aux_note[i] for i in pick],
    )


def write_excerpt(
    spec: ExcerptSpec, src: Path, dest: Path, duration_s: float = DURATION_S
) -> tuple[int, int]:
    """Write one excerpt record (.hea/.dat/.atr) into `dest`; returns its original [start, stop)."""
    header = wfdb.rdheader(str(src / spec.record))
    ann = wfdb.rdann(str(src / spec.record), "atr")
    span = int(round(duration_s * header.fs))
    start = richest_start(np.asarray(ann.sample), np.asarray(ann.symbol), spec.richest_in,
                          header.sig_len, span, int(SEARCH_STEP_S * header.fs))
    stop = start + span
    rec = wfdb.rdrecord(str(src / spec.record), sampfrom=start, sampto=stop, physical=False)
    # Keep the original header's fields (gain, ADC resolution and zero, baseline, units, lead
    # names) so the excerpt reads exactly like the source record, sample for sample.
    rec.record_name = spec.record
    rec.file_name = [f"{spec.record}.dat"] * rec.n_sig
    rec.sig_len = span
    rec.byte_offset = None
    rec.init_value = [int(v) for v in rec.d_signal[0]]
    rec.checksum = rec.calc_checksum()
    rec.comments = list(header.comments) + [
        f"Excerpt of record {spec.record}: original samples {start}-{stop - 1} "
        f"({_hms(start, header.fs)} to {_hms(stop, header.fs)}), original start sample {start}.",
        f"Chosen as the {duration_s:g} s span with the most '{spec.richest_in}' beats.",
        f"Source: {SOURCE}.",
        ATTRIBUTION,
    ]
    rec.wrsamp(write_dir=str(dest))
    wfdb.wrann(spec.record, "atr", fs=header.fs, write_dir=str(dest),
               **shifted_annotations(ann, start, stop))
    return start, stop


def main(argv: list[str] | None = None) -> None:
    """Write the three excerpt records and print which span of which record each one is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=None, help="full MIT-BIH directory")
    parser.add_argument("--dest", type=Path, default=excerpt_dir())
    args = parser.parse_args(argv)
    src = args.src or mitdb_dir()
    args.dest.mkdir(parents=True, exist_ok=True)
    for spec in EXCERPTS:
        start, stop = write_excerpt(spec, src, args.dest)
        print(f"{spec.record}: original samples {start}-{stop - 1} "
              f"(most '{spec.richest_in}' beats) -> {args.dest / spec.record}")


if __name__ == "__main__":
    main()
