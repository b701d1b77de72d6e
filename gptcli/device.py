"""Where a run computes and in which precision: device names and autocast."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable

import torch

from gptcli import cpu
from gptcli.cores import my_cpus
from gptcli.errors import GptcliError


def resolve_device(name: str) -> torch.device:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise GptcliError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GptcliError(f"device '{name}' asked for, but CUDA is not available; use --device cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise GptcliError(f"device '{name}' does not exist: {torch.cuda.device_count()} GPU(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise GptcliError("device 'mps' asked for, but MPS is not available; use --device cpu")
    return torch.device(name)


def resolve_precision(
    name: str,
    device: torch.device,
    key: str = "train.precision",
    faster: Callable[[], str] | None = None,
) -> str:
    """auto: bf16 on GPUs that support it; on a CPU with native bf16 (cpu.has_native_bf16), the
    faster of fp32 and bf16 as `faster` measures it (gptcli.autotune), bf16 where nothing
    measures; fp32 elsewhere."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        if device.type == "cpu" and cpu.has_native_bf16():
            return faster() if faster is not None else "bf16"
        return "fp32"
    if name == "fp16" and device.type != "cuda":
        raise GptcliError(f"{key} fp16 needs a CUDA device; use bf16 or fp32 on CPU/MPS")
    return name


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=lowp_dtype(precision))


def lowp_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16" else torch.float16


def cpu_threads(requested: int | None, local_processes: int, cores: int) -> int | None:
    """Intra-op threads for one process on CPU: as asked (train.threads), else, with several
    processes on this node, its share of the cores (so that they do not oversubscribe them);
    None leaves torch's default for a single process."""
    if requested is not None:
        return requested
    if local_processes > 1:
        return max(1, cores // local_processes)
    return None


def available_cores() -> int:
    return len(my_cpus())


def set_cpu_threads(requested: int | None, device: torch.device) -> None:
    if device.type != "cpu":
        return
    # torchrun tells each process how many share the node.
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    threads = cpu_threads(requested, local, available_cores())
    if threads is not None:
        torch.set_num_threads(threads)
