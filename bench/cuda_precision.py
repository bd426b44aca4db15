"""fp32 vs fp16 inference of a shipped model, and why the attention pooling stays fp32.

The L2 attention pooling sums the squares of the segmenter's output over 151 samples; fp16 ends at
65504. This script measures how close real windows come to that (the largest windowed sum of
squares, max A^2), and on a CUDA GPU compares four ways of running the network against its fp32
outputs on the CPU: fp32 on the GPU (as the runtime runs it, TF32 off, and with PyTorch's default
TF32 convolutions), the fp16 program `trainer tensorrt --fp16` compiles (pooling in fp32,
trainer.export.typed_program), and everything in fp16. It reports output differences,
decisions that flip at the card's thresholds (after the card's rhythm fusion), non-finite outputs,
and GPU latency per batch. No TensorRT is involved: these are the numerics a strongly typed engine
is asked to reproduce.

    .venv/bin/python bench/cuda_precision.py --records excerpt               # CPU: pooling sums only
    .venv/bin/python bench/cuda_precision.py --records DS1,DS2 --every 4     # CPU, the whole database
    .venv/bin/python bench/cuda_precision.py --records excerpt --every 2 --save-windows w.npz   # for a GPU machine
    python bench/cuda_precision.py --windows w.npz --json out.json           # on the GPU machine
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.export.passes import move_to_device_pass

from stream_ecg.card import default_model_dir, load_card
from stream_ecg.fusion import fuse, stream_fused
from trainer.export import HalfDeployable, deployable_from_folder, typed_program
from trainer.model import AttentionPooling

FP16_MAX = float(np.finfo(np.float16).max)


def record_windows(card, names: list[str], every: int):
    """The runtime's model input for every `every`-th window of each record, with the record's name and, for a card
    that reads one, each window's stream RR reference (else None), computed over every window in order as served."""
    from stream_ecg.data import excerpt_dir, load_record
    from stream_ecg.dsp import window_input
    from stream_ecg.offline import model_input, window_starts
    from stream_ecg.postprocess import new_reference, stream_rr_reference

    for name in names:
        rec = load_record(name.removeprefix("excerpt:"), excerpt_dir() if name.startswith("excerpt:") else None)
        sig, _ = model_input(card.leads, card.dsp, rec)
        starts = window_starts(sig.shape[1], card.window, card.hop)
        history, reference = card.dsp.new_history(), new_reference(card)
        for i in range(0, len(starts), 256):  # rhythm history and RR reference run over every window, in order
            s = starts[i : i + 256]
            x = window_input(np.stack([sig[:, a : a + card.window] for a in s]), card.dsp, s, history)
            rr = stream_rr_reference(card, x, s, reference)
            keep = (np.arange(i, i + len(s)) % every) == 0
            yield name.removeprefix("excerpt:"), x[keep], None if rr is None else rr[keep]


def record_names(spec: str) -> list[str]:
    from stream_ecg.data.mitdb import DS1, DS2

    names: list[str] = []
    for part in spec.split(","):
        names += {"DS1": list(DS1), "DS2": list(DS2), "excerpt": ["excerpt:208", "excerpt:232", "excerpt:100"]}.get(part, [part])
    return names


class PoolingPeak:
    """Largest windowed sum of squares (max A^2) per window, read off every AttentionPooling module."""

    def __init__(self, net: torch.nn.Module):
        self.peaks: list[torch.Tensor] = []
        self.hooks = [m.register_forward_hook(lambda _m, _i, out: self.peaks.append(out.float().square().amax(dim=(1, 2))))
                      for m in net.modules() if isinstance(m, AttentionPooling)]

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()

    def take(self) -> np.ndarray:
        peak = torch.stack(self.peaks).amax(0).cpu().numpy() if self.peaks else np.zeros(0)
        self.peaks = []
        return peak


def fp16_pooling(s: torch.Tensor, kernel: int) -> torch.Tensor:
    """The L2 pooling computed in the input's dtype (what the shipped model must not do in fp16)."""
    summed = F.avg_pool1d(s.square(), kernel, stride=1, padding=kernel // 2, count_include_pad=True) * kernel
    return torch.sqrt(summed + 1e-8)


def all_half(net) -> torch.nn.Module:
    half = HalfDeployable(net)
    for m in half.modules():
        if isinstance(m, AttentionPooling) and m.kind == "l2":
            m.forward = lambda s, k=m.kernel: fp16_pooling(s, k)
    return half


def run(module, x: np.ndarray, device: str, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    probs, att = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            p, a = module(torch.from_numpy(x[i : i + batch]).to(device))
            probs.append(p.float().cpu().numpy())
            att.append(a.float().cpu().numpy())
    return np.concatenate(probs), np.concatenate(att)


def compare(card, x, want, got, rr=None) -> dict:
    """fp32 CPU (`want`) against a GPU variant (`got`); decisions after the card's fusion, which for a "stream"
    card takes each window's stream RR reference `rr`."""
    (pw, aw), (pg, ag) = want, got
    finite = np.isfinite(pg).all(axis=1) & np.isfinite(ag).all(axis=1)
    th = np.array([card.thresholds.get(c, np.inf) for c in card.classes])
    flips = (fuse(card, x, pw, rr) >= th) != (fuse(card, x, np.nan_to_num(pg), rr) >= th)
    return {
        "nonfinite_windows": int((~finite).sum()),
        "max_abs_diff_probs": float(np.abs(pg - pw)[finite].max()) if finite.any() else None,
        "max_rel_diff_attention": float((np.abs(ag - aw).max(axis=1) / np.abs(aw).max(axis=1))[finite].max()) if finite.any() else None,
        "decision_flips": {c: int(flips[:, i].sum()) for i, c in enumerate(card.classes) if c in card.thresholds},
    }


def latency_ms(module, channels: int, window: int, batches=(1, 32, 256), reps: int = 50) -> dict:
    """GPU time per batch (CUDA events; random inputs, after warm-up), median of `reps`."""
    out = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.randn(b, channels, window, device="cuda")
            for _ in range(5):
                module(x)
            times = []
            for _ in range(reps):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                module(x)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            out[str(b)] = {"batch_ms": float(np.median(times)), "per_window_ms": float(np.median(times) / b)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: edge_models/DEFAULT)")
    ap.add_argument("--records", default="excerpt", help="DS1, DS2, excerpt or record names, comma-separated")
    ap.add_argument("--every", type=int, default=1, help="score every n-th window")
    ap.add_argument("--windows", type=Path, default=None, help="read windows (and CPU fp32 outputs) from this npz instead")
    ap.add_argument("--save-windows", type=Path, default=None, help="write the windows and CPU fp32 outputs here")
    ap.add_argument("--weights", type=Path, default=None, help="the .pt2's state_dict (torch.save) for another torch version")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    model_dir = args.model or default_model_dir()
    card = load_card(model_dir)
    net = deployable_from_folder(model_dir, torch.load(args.weights) if args.weights else None)
    peaks = PoolingPeak(net)
    t0 = time.perf_counter()
    if args.windows:
        z = np.load(args.windows)
        x, want, peak = z["x"].astype(np.float32), (z["probs"], z["attention"]), z["peak"]
        per_record = json.loads(str(z["per_record"]))
        rr = z["rr_reference"] if "rr_reference" in z.files else None
        if stream_fused(card) and rr is None:
            raise SystemExit(f"{args.windows} holds no stream RR references, and {card.name}'s fusion reads them: "
                             "save the windows again with --save-windows for this card")
    else:
        xs, probs, atts, rrs, peak_parts, per_record = [], [], [], [], [], {}
        for name, x, rr in record_windows(card, record_names(args.records), args.every):
            if args.save_windows:
                x = x.astype(np.float16).astype(np.float32)  # what the npz can carry, used for both sides
            p, a = run(net, x, "cpu")
            pk = peaks.take()
            r = per_record.setdefault(name, {"windows": 0, "max_sum_of_squares": 0.0, "windows_over_fp16_max": 0})
            r["windows"] += len(x)
            r["max_sum_of_squares"] = max(r["max_sum_of_squares"], float(pk.max(initial=0.0)))
            r["windows_over_fp16_max"] += int((pk > FP16_MAX).sum())
            peak_parts.append(pk)
            if args.save_windows:
                xs.append(x.astype(np.float16))
                probs.append(p)
                atts.append(a)
                if rr is not None:
                    rrs.append(rr)
        peak = np.concatenate(peak_parts)
        if args.save_windows:
            x, want = np.concatenate(xs), (np.concatenate(probs), np.concatenate(atts))
            extra = {"rr_reference": np.concatenate(rrs)} if rrs else {}
            np.savez_compressed(args.save_windows, x=x, probs=want[0], attention=want[1], peak=peak,
                                per_record=json.dumps(per_record), **extra)
            x = x.astype(np.float32)
    result = {
        "command": "bench/cuda_precision.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False)),
        "model": card.name,
        "windows": int(len(peak)),
        "fp16_max": FP16_MAX,
        "pooling_sum_of_squares": {
            "max": float(peak.max(initial=0.0)),
            "p99": float(np.percentile(peak, 99)) if len(peak) else None,
            "windows_over_fp16_max": int((peak > FP16_MAX).sum()),
            "per_record": per_record,
        },
        "cpu_seconds": time.perf_counter() - t0,
    }
    peaks.remove()
    if args.windows is not None and torch.cuda.is_available():
        gpu = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
        variants = {  # name: (module, TF32 allowed in convolutions and matmuls)
            "fp32": (copy.deepcopy(net).to("cuda"), False),
            "fp32_tf32": (copy.deepcopy(net).to("cuda"), True),
            "fp16_pooling_fp32": (move_to_device_pass(typed_program(net, card.channels, card.window, fp16=True), "cuda").module(), False),
            "fp16_everywhere": (all_half(net).to("cuda"), False),
        }
        for name, (module, tf32) in variants.items():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            gpu[name] = {**compare(card, x, want, run(module, x, "cuda"), rr), "latency": latency_ms(module, card.channels, card.window)}
        result["cuda"] = gpu
    elif args.windows is not None:
        result["cuda"] = "no CUDA device visible to torch: only the CPU pooling sums above were measured"
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
