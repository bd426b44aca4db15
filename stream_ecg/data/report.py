"""Print the data-layer numbers quoted in docs/data.md: `python -m stream_ecg.data.report`.

AAMI class counts of DS1/DS2 beside de Chazal et al. 2004, and paper-segment counts under
each interpretation tried beside the paper's 2627 PVC / 356 APB segments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stream_ecg.data.locate import mitdb_dir
from stream_ecg.data.mitdb import AAMI_CLASSES, ALL_RECORDS, DS1, DS2, PACED_RECORDS, aami_counts
from stream_ecg.data.segments import (
    AAMI_RULE, CLOSEST_RULE, PAPER_RULE, SegmentRule, count_paper_segments,
)

# de Chazal, O'Dwyer, Reilly, IEEE TBME 51(7):1196-1206, 2004: beats per AAMI class in each
# half of their inter-patient split (paced records excluded). Our whole-record counts match exactly.
DE_CHAZAL_2004 = {
    "DS1": {"N": 45866, "S": 944, "V": 3788, "F": 415, "Q": 8},
    "DS2": {"N": 44259, "S": 1837, "V": 3221, "F": 388, "Q": 7},
}
PAPER_SEGMENTS = {"PVC": 2627, "APB": 356}

NON_PACED = tuple(r for r in ALL_RECORDS if r not in PACED_RECORDS)
INTERPRETATIONS: tuple[tuple[str, SegmentRule, tuple[str, ...]], ...] = (
    ("plain rule (default): normal N, PVC V, APB A", PAPER_RULE, ALL_RECORDS),
    ("plain rule, paced records 102 104 107 217 excluded", PAPER_RULE, NON_PACED),
    ("plain rule + at least one N beat (CLOSEST_RULE)", CLOSEST_RULE, ALL_RECORDS),
    ("CLOSEST_RULE, paced records excluded", CLOSEST_RULE, NON_PACED),
    ("normal = N L R e j, PVC V, APB A", SegmentRule(normal=frozenset("NLRej")), ALL_RECORDS),
    ("APB = A a (aberrated APBs too)", SegmentRule(apb=frozenset("Aa")), ALL_RECORDS),
    ("AAMI classes: normal N L R e j, PVC V E, APB A a J S", AAMI_RULE, ALL_RECORDS),
    ("AAMI classes + at least one normal beat",
     SegmentRule(AAMI_RULE.normal, AAMI_RULE.pvc, AAMI_RULE.apb, True), ALL_RECORDS),
)
LENGTHS = (1990, 1995, 2000, 2005, 2010)


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def aami_table(data_dir: Path) -> str:
    """DS1/DS2 AAMI counts (whole records) beside de Chazal 2004."""
    lines = [_row(["Set", "Source", *AAMI_CLASSES, "Total"]), _row(["---"] * 8)]
    for name, records in (("DS1", DS1), ("DS2", DS2)):
        ours = aami_counts(records, data_dir)
        theirs = DE_CHAZAL_2004[name]
        lines.append(_row([name, "stream-ecg", *ours.values(), sum(ours.values())]))
        lines.append(_row([name, "de Chazal 2004", *theirs.values(), sum(theirs.values())]))
    return "\n".join(lines)


def segments_table(data_dir: Path) -> str:
    """Paper-segment counts for each interpretation beside the paper's."""
    lines = [_row(["Interpretation (length 2000)", "PVC", "APB", "dPVC", "dAPB"]),
             _row(["---"] * 5)]
    lines.append(_row(["paper", *PAPER_SEGMENTS.values(), 0, 0]))
    for label, rule, records in INTERPRETATIONS:
        c = count_paper_segments(records, data_dir, rule=rule)
        lines.append(_row([label, c["PVC"], c["APB"], f"{c['PVC'] - PAPER_SEGMENTS['PVC']:+d}",
                           f"{c['APB'] - PAPER_SEGMENTS['APB']:+d}"]))
    return "\n".join(lines)


def length_table(data_dir: Path) -> str:
    """How much the counts move when the segment length moves a few samples."""
    lines = [_row(["Rule", *(f"length {n}" for n in LENGTHS)]), _row(["---"] * (1 + len(LENGTHS)))]
    for label, rule in (("plain", PAPER_RULE), ("CLOSEST_RULE", CLOSEST_RULE)):
        cells = []
        for n in LENGTHS:
            c = count_paper_segments(ALL_RECORDS, data_dir, length=n, rule=rule)
            cells.append(f"{c['PVC']} / {c['APB']}")
        lines.append(_row([label, *cells]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the three tables as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="full MIT-BIH directory")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or mitdb_dir()
    print("## AAMI classes, DS1/DS2 (every annotated beat of each whole record)\n")
    print(aami_table(data_dir))
    print("\n## Paper segments, all 48 records unless stated (PVC / APB)\n")
    print(segments_table(data_dir))
    print("\n## Sensitivity to segment length (PVC / APB, all 48 records)\n")
    print(length_table(data_dir))


if __name__ == "__main__":
    main()
