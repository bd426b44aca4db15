"""Data layer: locating MIT-BIH, loading WFDB records, the paper's segments, streaming windows."""

from stream_ecg.data.locate import ENV_VAR, MitdbMissing, excerpt_dir, fetch_mitdb, mitdb_dir
from stream_ecg.data.mitdb import (
    AAMI_CLASSES,
    ALL_RECORDS,
    BEAT_SYMBOLS,
    DS1,
    DS2,
    PACED_RECORDS,
    SYMBOL_TO_AAMI,
    Beats,
    Record,
    RecordNotFound,
    aami_counts,
    load_beats,
    load_record,
    record_length,
)
from stream_ecg.data.segments import (
    AAMI_RULE,
    CLOSEST_RULE,
    PAPER_RULE,
    PaperSegments,
    SegmentRule,
    build_paper_segments,
    concat_segments,
    count_paper_segments,
    paper_segments,
    segment_spans,
)
from stream_ecg.data.windows import MASK_CODES, Windows, beat_mask, sliding_windows

__all__ = [
    "AAMI_CLASSES", "AAMI_RULE", "ALL_RECORDS", "BEAT_SYMBOLS", "CLOSEST_RULE", "DS1", "DS2",
    "ENV_VAR", "MASK_CODES", "PACED_RECORDS", "PAPER_RULE", "SYMBOL_TO_AAMI", "Beats",
    "MitdbMissing", "PaperSegments", "Record", "RecordNotFound", "SegmentRule", "Windows",
    "aami_counts", "beat_mask", "build_paper_segments", "concat_segments",
    "count_paper_segments", "excerpt_dir", "fetch_mitdb", "load_beats", "load_record",
    "mitdb_dir", "paper_segments", "record_length", "segment_spans", "sliding_windows",
]
