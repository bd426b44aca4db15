"""Export a trained joint model for the runtime: ONNX, torch.export (.pt2), Torch-TensorRT, and its card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from stream_ecg.card import CARD_FILE, load_card, sha256
from stream_ecg.infer import EXPORTED_FILE, ONNX_FILE, cuda_problem

from .model import JointModel

Head = Literal["softmax", "multilabel"]


class ExportError(RuntimeError):
    """Export failed or cannot run here; the message says what to do instead."""


class Deployable(nn.Module):
    """What ships: probabilities and the attention map, so the runtime needs no model knowledge.

    softmax: probabilities over the model's classes. multilabel: the model's logits are per
    abnormal class (independent sigmoids) and a "normal" probability (none present) is put first.
    """

    def __init__(self, model: JointModel, head: Head = "softmax"):
        super().__init__()
        self.model, self.head = model.eval(), head
        self.eval()  # the wrapper too, so export sees an inference-mode module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, a = self.model(x)
        if self.head == "softmax":
            probs = torch.softmax(logits, dim=1)
        else:
            p = torch.sigmoid(logits)
            probs = torch.cat([torch.prod(1 - p, dim=1, keepdim=True), p], dim=1)
        return probs, a[:, 0]


def export_onnx(net: Deployable, path: Path, leads: int, window: int) -> Path:
    """ONNX with a dynamic batch axis (opset 18)."""
    example = torch.zeros(2, leads, window)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["ecg"],
        output_names=["probs", "attention"],
        dynamic_shapes={"x": {0: batch}},
        opset_version=18,
        dynamo=True,
        external_data=False,
    )
    return path


def export_program(net: Deployable, path: Path, leads: int, window: int) -> Path:
    """torch.export ExportedProgram with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(net, (torch.zeros(2, leads, window),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return path


def verify_onnx(net: Deployable, onnx_path: Path, x: np.ndarray) -> float:
    """Max abs difference between torch and onnxruntime outputs on real windows."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})
    with torch.no_grad():
        want = [t.numpy() for t in net(torch.from_numpy(x.astype(np.float32)))]
    return float(max(np.abs(g - w).max() for g, w in zip(got, want)))


def compile_tensorrt(program_path: Path, leads: int, window: int, out: Path, fp16: bool = False) -> Path:
    """Torch-TensorRT (dynamo IR) compile of the ExportedProgram; the L2 pooling stays in fp32."""
    problem = cuda_problem()
    if problem:
        raise ExportError(
            f"Torch-TensorRT needs CUDA: {problem}. The portable route: copy "
            f"{program_path.with_name(ONNX_FILE)} to the NVIDIA device (e.g. Jetson) and run "
            f"`trtexec --onnx={program_path.with_name(ONNX_FILE)} --saveEngine=model.engine"
            f"{' --fp16' if fp16 else ''}`."
        )
    import torch_tensorrt  # lazy: importing it without an NVIDIA driver fails

    module = torch.export.load(str(program_path)).module().cuda().eval()
    precisions = {torch.float32, torch.float16} if fp16 else {torch.float32}
    inputs = [
        torch_tensorrt.Input(
            min_shape=(1, leads, window), opt_shape=(32, leads, window), max_shape=(256, leads, window), dtype=torch.float32
        )
    ]
    trt = torch_tensorrt.compile(
        module,
        ir="dynamo",
        inputs=inputs,
        enabled_precisions=precisions,
        # the attention pooling's sum of squares overflows fp16: keep those ops in fp32
        torch_executed_ops={"torch.ops.aten.avg_pool1d.default", "torch.ops.aten.sqrt.default"} if fp16 else set(),
    )
    torch_tensorrt.save(trt, str(out), inputs=[torch.zeros(1, leads, window, device="cuda")])
    return out


def write_model_folder(net: Deployable, out: Path, card: dict, check_windows: np.ndarray | None = None) -> dict:
    """ONNX + .pt2 + card.json (with checksums) in `out`; returns the card. Verifies ONNX vs torch."""
    out.mkdir(parents=True, exist_ok=True)
    leads, window = int(card["model_config"]["in_leads"]), int(card["window"])  # input channels
    export_onnx(net, out / ONNX_FILE, leads, window)
    export_program(net, out / EXPORTED_FILE, leads, window)
    if check_windows is not None:
        diff = verify_onnx(net, out / ONNX_FILE, check_windows)
        if diff > 1e-4:
            raise ExportError(f"onnxruntime and torch disagree by {diff:.2e} (> 1e-4) on real windows")
        card = {**card, "export_check": {"max_abs_diff_onnx_vs_torch": diff, "windows": int(len(check_windows))}}
    card = {**card, "files": {name: sha256(out / name) for name in (ONNX_FILE, EXPORTED_FILE)}}
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    load_card(out)  # the runtime must accept what we ship
    return card
