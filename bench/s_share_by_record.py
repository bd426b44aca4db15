"""Data description (annotations only, no model): how DS1's and DS2's S beats are spread over their records.

The inter-patient protocol develops every rule on DS1 and judges it on DS2. This counts, from the MIT-BIH beat
annotations mapped to AAMI classes (`stream_ecg.data.mitdb.aami_counts`), each record's S beats and their share of its
beats, per set, so a reader can see which record types each set holds. It also states what the S beat Se target
(80 %) asks of DS2's largest S record, given the others.

Usage: .venv/bin/python bench/s_share_by_record.py > docs/results/s_share_by_record.json
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stream_ecg.data.mitdb import DS1, DS2, aami_counts  # noqa: E402

TARGET_SE = 0.80


def by_record(records: tuple[str, ...]) -> list[dict]:
    """Each record's S beats, all beats and S share, largest share first."""
    rows = []
    for name in records:
        counts = aami_counts([name])
        beats = sum(counts.values())
        rows.append({"record": name, "S": counts.get("S", 0), "beats": beats, "S_share": round(counts.get("S", 0) / beats, 4)})
    return sorted(rows, key=lambda r: -r["S_share"])


def main() -> None:
    out = {}
    for label, records in (("DS1", DS1), ("DS2", DS2)):
        rows = by_record(records)
        total = sum(r["S"] for r in rows)
        top = max(rows, key=lambda r: r["S"])
        out[label] = {
            "S_beats": total,
            "largest_S_record": {**top, "share_of_set_S": round(top["S"] / total, 4)},
            "records_over_20pct_S": [r["record"] for r in rows if r["S_share"] > 0.2],
            "records": rows,
        }
    ds2 = out["DS2"]
    top = ds2["largest_S_record"]
    rest = ds2["S_beats"] - top["S"]
    needed = TARGET_SE * ds2["S_beats"]
    out["target"] = {
        "S_se": TARGET_SE,
        "beats_needed": needed,
        # even if every S beat outside the largest record were found, this much of that record must be
        "min_se_in_largest_record": round(max(0.0, needed - rest) / top["S"], 4),
    }
    out["command"] = "python bench/s_share_by_record.py"
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
