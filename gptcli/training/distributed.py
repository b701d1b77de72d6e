"""Distributed data parallel under torchrun: which process this is, its device, and the few
collectives the training loop needs.

torchrun describes each process through RANK, LOCAL_RANK and WORLD_SIZE; without them (or with
WORLD_SIZE=1) everything here is a single process and every collective is the identity.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from gptcli.errors import GptcliError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    if "WORLD_SIZE" not in os.environ:
        return Dist()
    try:
        ranks = {k: int(os.environ.get(k, "0")) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    except ValueError:
        raise GptcliError(
            "RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them); unset them "
            "to train in one process"
        ) from None
    return Dist(ranks["RANK"], ranks["LOCAL_RANK"], ranks["WORLD_SIZE"])


def setup(d: Dist, device: str) -> torch.device:
    """Joins the process group (nccl on CUDA, gloo on CPU) and returns this process's device:
    `auto` and `cuda` mean cuda:LOCAL_RANK, one GPU per process."""
    if device.startswith("cuda:") or device == "mps":
        raise GptcliError(
            f"train.device {device} does not work under torchrun: each process takes "
            "cuda:LOCAL_RANK; use --device cuda (or auto), or cpu"
        )
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise GptcliError("device 'cuda' asked for, but CUDA is not available; use cpu")
        if d.local_rank >= torch.cuda.device_count():
            raise GptcliError(
                f"LOCAL_RANK {d.local_rank} has no GPU: this node has "
                f"{torch.cuda.device_count()}; start at most that many processes per node"
            )
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dev


def teardown(d: Dist) -> None:
    """Leave the process group while the interpreter is whole.

    The DDP wrapper's reducer holds the group, and modules sit in reference cycles: without a
    collection here the group's C++ object (and gloo's threads) would be destroyed during
    interpreter shutdown, which can abort the process (SIGABRT after a complete run; see
    pytorch/pytorch#179291). The caller has passed a barrier first on the normal path, so no
    process leaves while another still evaluates or saves."""
    if d.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def all_sum(d: Dist, t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t summed over all processes (moved to the process's device for the reduction: nccl
    reduces CUDA tensors only)."""
    if not d.enabled:
        return t
    out = t.to(device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def all_max(d: Dist, value: int, device: torch.device) -> int:
    if not d.enabled:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather(d: Dist, obj: Any) -> list[Any]:
    """Every process's obj, in rank order (on every process)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
