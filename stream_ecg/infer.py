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
        program = torch.export.load(str(path))
        if device != "cpu":  # the saved graph pins its tensors to the CPU; `.module().to(device)` is not enough
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
            strict_fp32(torch)
        self.program = program  # kept for backends that compile it further (TensorRTModel)
        self.module = program.module()

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.torch.inference_mode():
            probs, attention = self.module(self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return probs.float().cpu().numpy(), attention.float().cpu().numpy()


def strict_fp32(torch) -> None:
    """fp32 on a GPU means fp32: no TF32 in convolutions and matmuls. With TF32 (PyTorch's default for
    cuDNN convolutions) the shipped model's probabilities moved by up to 1.5e-3 from the CPU's on an
    H200 (docs/results/cuda_precision_h200.json); the card's thresholds were chosen on fp32 outputs."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (no NVIDIA GPU or driver on this machine)"
    return None


def tensorrt_problem() -> str | None:
    """Why Torch-TensorRT cannot be used here, or None when it can (looked up, not imported)."""
    from importlib.util import find_spec

    problem = cuda_problem()
    if problem is None and find_spec("torch_tensorrt") is None:
        problem = "torch-tensorrt is not installed (pip install 'stream-ecg[tensorrt]')"
    return problem


# Largest batch a TensorRT engine is built for; the worker's batches and the interval labelling's
# re-runs are split to fit.
TRT_MAX_BATCH = 256


def compile_tensorrt_program(program, leads: int, window: int):
    """Torch-TensorRT (dynamo IR) build of an ExportedProgram for batches of 1..TRT_MAX_BATCH windows.

    The dynamo path of Torch-TensorRT 2.13 is strongly typed: each op runs in the dtype the program
    gives it, so an fp32 program builds an fp32 engine and fp16 needs an fp16 program
    (trainer.export.typed_program)."""
    import torch
    import torch_tensorrt  # lazy: importing it without an NVIDIA driver fails
    from torch.export.passes import move_to_device_pass

    spec = torch_tensorrt.Input(min_shape=(1, leads, window), opt_shape=(32, leads, window),
                                max_shape=(TRT_MAX_BATCH, leads, window), dtype=torch.float32)
    program = move_to_device_pass(program, "cuda")  # a no-op for a program already there
    return torch_tensorrt.dynamo.compile(program, arg_inputs=[spec], disable_tf32=True)


class TensorRTModel(TorchModel):
    """The fp32 ExportedProgram compiled by Torch-TensorRT on first load (needs an NVIDIA GPU)."""

    backend = "tensorrt"

    def __init__(self, card: ModelCard, path: Path, threads: int = 1):
        problem = tensorrt_problem()
        if problem:
            raise BackendUnavailable(
                f"tensorrt backend unavailable: {problem}. Use --backend onnxruntime here, or build a TensorRT "
                f"engine on the target with: trtexec --onnx={path.with_name(ONNX_FILE)} --saveEngine=model.engine"
            )
        super().__init__(card, path, threads, device="cuda")
        self.module = compile_tensorrt_program(self.program, card.channels, card.window)

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(x) <= TRT_MAX_BATCH:
            return super().infer(x)
        parts = [super().infer(x[i : i + TRT_MAX_BATCH]) for i in range(0, len(x), TRT_MAX_BATCH)]
        return np.concatenate([p for p, _ in parts]), np.concatenate([a for _, a in parts])


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
