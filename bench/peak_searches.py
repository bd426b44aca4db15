"""How many times the offline path (`stream_ecg.offline.run_record`, the code the live batcher shares) searches for R
peaks on one bundled excerpt record, per shipped model: the cost the stream-reference cards add, counted rather than
timed. `rhythm.r_peaks` is wrapped to count its calls; nothing else changes.

Usage: .venv/bin/python bench/peak_searches.py 232 edge_models/bedside-v9.2 edge_models/bedside-v9.5
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import stream_ecg.rhythm as rhythm  # noqa: E402
from stream_ecg.data import excerpt_dir, load_record  # noqa: E402
from stream_ecg.infer import load_model  # noqa: E402
from stream_ecg.offline import run_record  # noqa: E402

calls = [0]
real = rhythm.r_peaks


def counted(*a, **kw):
    calls[0] += 1
    return real(*a, **kw)


for module in [m for name, m in sys.modules.items() if name.startswith("stream_ecg.")]:  # every `from .rhythm import r_peaks`
    if getattr(module, "r_peaks", None) is real:
        module.r_peaks = counted

rec = load_record(sys.argv[1], excerpt_dir())
report = {"record": f"excerpt {sys.argv[1]}", "models": {}}
for folder in sys.argv[2:]:
    calls[0] = 0
    out = run_record(load_model(folder), rec)
    report["models"][Path(folder).name] = {"windows": int(len(out.starts)), "r_peaks_calls": calls[0]}
print(json.dumps(report, indent=1))
