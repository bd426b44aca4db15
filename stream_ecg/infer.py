"""Inference backends behind one call: (B, leads, window) float32 -> (probs (B, C), attention (B, window)).

onnxruntime is the default and needs nothing else. torch (ExportedProgram `.pt2`) and
Torch-TensorRT are imported lazily: torch is a trainer dependency, and torch-tensorrt cannot even
be imported without an NVIDIA driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .card import ModelCard, load_card
from .fusion import with_fusion

ONNX_FILE = "model.onnx"
EXPORTED_FILE = "model.pt2"
BACKENDS = ("onnxruntime", "torch", "tensorrt")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to use instead."""


class InferenceModel(Protocol):
    card: ModelCard
    backend: str

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class OnnxModel:
    """onnxruntime session on CPU with a fixed thread budget (the worker owns the other cores)."""

    backend = "onnxruntime"

    def __init__(self, card: ModelCard, path: Path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.card = card
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 3 or shape[1] != card.channels or shape[2] != card.window:
            raise BackendUnavailable(
                f"{path} takes input {shape} but the card says (batch, {card.channels}, {card.window}): "
                "the card and the model do not belong together"
            )

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, attention = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return probs, attention


class TorchModel:
    """torch.export ExportedProgram; same outputs as the ONNX graph."""

    backend = "torch"

    def __init__(self, card: ModelCard, path: Path, threads: int = 1, device: str = "cpu"):
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendUnavailable("the torch backend needs torch: pip install 'stream-ecg[trainer]'") from exc
        torch.set_num_threads(threads)
        self.torch, self.device, self.card = torch, device, card
        self.module = torch.export.load(str(path)).module().to(device)

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.torch.inference_mode():
            probs, attention = self.module(self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return probs.float().cpu().numpy(), attention.float().cpu().numpy()


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (no NVIDIA GPU or driver on this machine)"
    return None


class TensorRTModel(TorchModel):
    """The ExportedProgram compiled by Torch-TensorRT on first load (needs an NVIDIA GPU)."""

    backend = "tensorrt"

    def __init__(self, card: ModelCard, path: Path, threads: int = 1, fp16: bool = False):
        problem = cuda_problem()
        if problem:
            raise BackendUnavailable(
                f"tensorrt backend unavailable: {problem}. Use --backend onnxruntime here, or build a TensorRT "
                f"engine on the target with: trtexec --onnx={path.with_name(ONNX_FILE)} --saveEngine=model.engine"
            )
        super().__init__(card, path, threads, device="cuda")
        try:
            import torch_tensorrt
        except ImportError as exc:
            raise BackendUnavailable("tensorrt backend needs torch-tensorrt: pip install 'stream-ecg[tensorrt]'") from exc
        example = self.torch.zeros(1, card.channels, card.window, device="cuda")
        precisions = {self.torch.float16, self.torch.float32} if fp16 else {self.torch.float32}
        self.module = torch_tensorrt.compile(self.module, ir="dynamo", inputs=[example], enabled_precisions=precisions)


def load_model(model_dir: Path | str, backend: str = "onnxruntime", threads: int = 1) -> InferenceModel:
    """Load a model folder (card + weights) for one backend; refuses a card/model mismatch. The card's
    rhythm fusion, if any, is part of the model: every caller gets the fused probabilities."""
    model_dir = Path(model_dir)
    card = load_card(model_dir)
    if backend == "onnxruntime":
        return with_fusion(OnnxModel(card, model_dir / ONNX_FILE, threads))
    if backend == "torch":
        return with_fusion(TorchModel(card, model_dir / EXPORTED_FILE, threads))
    if backend == "tensorrt":
        return with_fusion(TensorRTModel(card, model_dir / EXPORTED_FILE, threads))
    raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {BACKENDS}")
