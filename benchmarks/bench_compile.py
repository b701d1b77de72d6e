"""Does torch.compile pay on this machine for the CPU recipe (configs/shakespeare-char-cpu.yaml)?

    python benchmarks/bench_compile.py [--steps 100] [--precision auto|fp32|bf16]

Times training steps (forward, backward, clip, AdamW) in one process, eager and compiled, on
random batches of the recipe's shape: the compile time (the first steps) and the steady step time
of each, and from them how many steps a run needs before compiling has paid for itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptcli.config import load_config  # noqa: E402
from gptcli.device import autocast, resolve_precision  # noqa: E402
from gptcli.model import GPT  # noqa: E402
from gptcli.training.optim import make_optimizer  # noqa: E402

VOCAB = 65  # tiny-shakespeare's characters


def step_times(compiled: bool, steps: int, precision: str) -> list[float]:
    cfg = load_config(REPO / "configs/shakespeare-char-cpu.yaml")
    torch.manual_seed(0)
    model = GPT(cfg.model, VOCAB)
    optimizer = make_optimizer(model, cfg.train, torch.device("cpu"))
    forward = torch.compile(model) if compiled else model
    shape = (cfg.train.batch_size, cfg.model.block_size)
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        x, y = (torch.randint(0, VOCAB, shape, generator=g) for _ in range(2))
        start = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            _, loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    precision = resolve_precision(args.precision, torch.device("cpu"))
    print(f"{torch.get_num_threads()} threads, precision {precision}, {args.steps} steps each")
    results = {}
    for compiled in (False, True):
        times = step_times(compiled, args.steps, precision)
        warm = 3 if compiled else 1  # compiling happens in the first steps (forward, backward)
        first, steady = sum(times[:warm]), statistics.median(times[warm:])
        results[compiled] = (first, steady)
        name = "compiled" if compiled else "eager"
        print(f"{name:>8}: first {warm} steps {first:.2f} s, then {steady * 1e3:.1f} ms a step")
    (eager_first, eager), (compile_first, compiled) = results[False], results[True]
    saved = eager - compiled
    if saved > 0:
        extra = compile_first - eager_first
        steps = extra / saved
        print(f"compiled is {eager / compiled:.2f}x per step; pays after {steps:,.0f} steps")
    else:
        print(f"compiled is {eager / compiled:.2f}x per step: it never pays")


if __name__ == "__main__":
    main()
