"""train.precision: auto on a CPU with native bf16 trains in whichever of fp32 and bf16 runs this
model's step faster on this machine, measured once (gptcli.autotune) and remembered.

On the AMD EPYC (AVX512-BF16) the project's machines have, bf16 autocast is the faster for the
CPU recipe's model; where each bf16 kernel call costs more than it saves, fp32 is; a CPU with AMX
moves the line (benchmarks/bench_precision.py measures both precisions and what auto chose).
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch

from gptcli import autotune
from gptcli.device import autocast, resolve_precision
from gptcli.model import GPT

PRECISIONS = ("fp32", "bf16")


def train_precision(name: str, model: GPT, rows: int, device: torch.device) -> str:
    """name resolved for training model on rows sequences a micro-step."""
    return resolve_precision(name, device, faster=lambda: faster_step(model, rows, device))


def faster_step(model: GPT, rows: int, device: torch.device) -> str:
    """fp32 or bf16: the faster forward and backward of a copy of model on rows random
    sequences (the optimizer's step is the same in both). Leaves model and the RNG as they
    were."""
    shape = (rows, model.cfg.block_size)

    def prepare():
        probe = copy.deepcopy(model).train()
        g = torch.Generator().manual_seed(0)
        x, y = (torch.randint(model.vocab_size, shape, generator=g).to(device) for _ in range(2))

        def step(precision: str):
            def run() -> None:
                with autocast(device, precision):
                    _, loss = probe(x, y)
                loss.backward()
                probe.zero_grad(set_to_none=True)

            return run

        return {p: step(p) for p in PRECISIONS}

    workload = {"task": "train step", "device": device.type, "model": asdict(model.cfg),
                "vocab": model.vocab_size, "rows": rows}  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG
        return autotune.fastest(workload, PRECISIONS, prepare, default="bf16")
