"""Export a trained joint model for the runtime: ONNX, torch.export (.pt2), Torch-TensorRT, and its card."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from stream_ecg.card import CARD_FILE, load_card, sha256
from stream_ecg.infer import EXPORTED_FILE, ONNX_FILE, compile_tensorrt_program, tensorrt_problem

from .model import JointEnsemble, JointModel, JointModelConfig

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
    torch.export.save(typed_program(net, leads, window), str(path))
    return path


def verify_onnx(net: Deployable, onnx_path: Path, x: np.ndarray) -> float:
    """Max abs difference between torch and onnxruntime outputs on real windows."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})
    with torch.no_grad():
        want = [t.numpy() for t in net(torch.from_numpy(x.astype(np.float32)))]
    return float(max(np.abs(g - w).max() for g, w in zip(got, want)))


def deployable_from_folder(model_dir: Path, state_dict: dict | None = None) -> Deployable:
    """The shipped network as an nn.Module, rebuilt from a model folder's card and .pt2 weights, so a
    shipped model can be compiled again (e.g. in fp16 for TensorRT) without its training run.
    `state_dict` (the .pt2's, saved with torch.save) stands in for the .pt2 under another torch version."""
    card = load_card(model_dir)  # refuses a folder whose files do not match the card
    raw = json.loads((Path(model_dir) / CARD_FILE).read_text())
    cfg = JointModelConfig.from_dict(raw["model_config"])
    members = int(raw.get("ensemble", {}).get("members", 1))
    model = JointEnsemble(cfg, members) if "ensemble" in raw else JointModel(cfg)
    # a multilabel head has one output per abnormal class and puts "normal" first (Deployable)
    heads: dict[int, Head] = {cfg.n_classes: "softmax", cfg.n_classes + 1: "multilabel"}
    if len(card.classes) not in heads:
        raise ExportError(f"{model_dir}: the card's classes {card.classes} do not fit a network of {cfg.n_classes} outputs")
    net = Deployable(model, heads[len(card.classes)])
    net.load_state_dict(state_dict if state_dict is not None else torch.export.load(str(Path(model_dir) / EXPORTED_FILE)).state_dict)
    return net.eval()


class HalfDeployable(nn.Module):
    """The network in fp16 behind fp32 inputs and outputs. The attention pooling casts itself to fp32
    (trainer.model.AttentionPooling): its windowed sum of squares passes fp16's 6.55e4 limit in 22 of 19 844
    MIT-BIH windows (up to 8.9e4, bench/cuda_precision.py). An explicitly typed program carries
    those casts, so a strongly typed TensorRT build keeps them."""

    def __init__(self, net: Deployable):
        super().__init__()
        self.net = copy.deepcopy(net).half().eval()
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, attention = self.net(x.half())
        return probs.float(), attention.float()


def typed_program(net: Deployable, leads: int, window: int, fp16: bool = False) -> torch.export.ExportedProgram:
    """The network as an ExportedProgram with a dynamic batch axis: fp32 (the shipped .pt2), or fp16 with the
    pooling in fp32 (what `trainer tensorrt --fp16` compiles)."""
    module = HalfDeployable(net) if fp16 else net
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(module, (torch.zeros(2, leads, window),), dynamic_shapes={"x": {0: batch}})


def op_dtypes(program: torch.export.ExportedProgram, op: str) -> list[torch.dtype]:
    """Output dtypes of every call of an aten op (e.g. "square") in a program, in graph order."""
    return [n.meta["val"].dtype for n in program.graph.nodes
            if n.op == "call_function" and getattr(n.target, "__name__", "").split(".")[0] == op]


def compile_tensorrt(model_dir: Path, out: Path, fp16: bool = False) -> Path:
    """Torch-TensorRT (dynamo IR) build of a shipped model folder, saved as an ExportedProgram.

    Torch-TensorRT 2.13's dynamo path is strongly typed (it ignores `enabled_precisions`), so fp16 is
    asked for by compiling an fp16 program (HalfDeployable) whose attention pooling stays fp32."""
    onnx_path = Path(model_dir) / ONNX_FILE
    problem = tensorrt_problem()
    if problem:
        raise ExportError(
            f"Torch-TensorRT cannot run here: {problem}. The portable route: copy {onnx_path} to the NVIDIA "
            f"device (e.g. Jetson) and run `trtexec --onnx={onnx_path} --saveEngine=model.engine` (fp32; "
            "do not add --fp16: TensorRT may then put the attention pooling's windowed sum of squares, "
            "up to 8.9e4 on MIT-BIH, into fp16, whose range ends at 6.55e4)."
        )
    import torch_tensorrt  # lazy: importing it without an NVIDIA driver fails

    card = load_card(model_dir)
    program = typed_program(deployable_from_folder(model_dir), card.channels, card.window, fp16)
    trt = compile_tensorrt_program(program, card.channels, card.window)
    example = torch.zeros(2, card.channels, card.window, device="cuda")
    torch_tensorrt.save(trt, str(out), arg_inputs=[example])
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
