"""Device choice and the GPU fast path (bf16 autocast, channels_last, cudnn.benchmark)."""
from __future__ import annotations

import contextlib
import os

import torch

from bench.core.errors import BenchError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def autocast(device: torch.device, amp: str):
    """bf16 autocast for the network on CUDA (amp auto/bf16); losses cast to float32 themselves."""
    if device.type == "cuda" and amp in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and amp == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure(runtime, device: torch.device) -> None:
    """Process-wide switches: determinism, threads, cudnn autotuning."""
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    if runtime.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
