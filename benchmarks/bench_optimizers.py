"""What Muon costs per step against AdamW on the CPU recipe (nanoGPT's shakespeare-char size: 4
layers x 4 heads x 128 wide, block 64, batch 12, vocab 65), and the optimizer step alone.

Each optimizer trains its own copy of one model on the same random batch; the two are timed in
alternating rounds (a noisy machine slows both alike) and each reports its median step: forward,
backward, clipping and the optimizer step, as the training loop runs them. Read the ratio.

    .venv/bin/python benchmarks/bench_optimizers.py [--rounds 7] [--steps 20] [--threads 1]
        [--precision fp32|bf16] [--width 128]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from gptcli.config import ModelConfig, TrainConfig
from gptcli.device import autocast
from gptcli.model import GPT
from gptcli.training.optim import make_optimizer, set_lr


def timed(model, opt, x, y, steps: int, precision: str) -> tuple[float, float]:
    """Median seconds of a whole step and of opt.step() alone, over `steps` steps."""
    whole, stepping = [], []
    for _ in range(steps):
        start = time.perf_counter()
        with autocast(x.device, precision):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        mid = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        end = time.perf_counter()
        whole.append(end - start)
        stepping.append(end - mid)
    return statistics.median(whole), statistics.median(stepping)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mc = ModelConfig(n_layer=4, n_head=4, n_embd=args.width, block_size=64, bias=False,
                     activation="gelu")  # fmt: skip
    base = GPT(mc, 65)
    x = torch.randint(65, (12, 64))
    y = torch.randint(65, (12, 64))
    runs = {}
    for name in ("adamw", "muon"):
        model = copy.deepcopy(base)
        opt = make_optimizer(model, TrainConfig(lr=1e-3, optimizer=name), torch.device("cpu"))
        set_lr(opt, 1e-3)
        timed(model, opt, x, y, 3, args.precision)  # warm up: state, kernels
        runs[name] = (model, opt, [])
    for _ in range(args.rounds):
        for model, opt, times in runs.values():
            times.append(timed(model, opt, x, y, args.steps, args.precision))
    med = {name: tuple(statistics.median(t[i] for t in times) for i in range(2))
           for name, (_, _, times) in runs.items()}  # fmt: skip
    print(f"4 x {args.width}, batch 12 x 64, {args.precision}, {args.threads} thread(s), "
          f"median of {args.rounds} rounds x {args.steps} steps")  # fmt: skip
    for name, (whole, stepping) in med.items():
        print(f"{name:6s} step {whole * 1e3:7.2f} ms   optimizer alone {stepping * 1e3:6.2f} ms")
    print(f"muon / adamw per step: {med['muon'][0] / med['adamw'][0]:.3f}")


if __name__ == "__main__":
    main()
