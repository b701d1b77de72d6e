"""Attention under CPU bf16 autocast: torch's bf16 attention kernel against fp32 attention of
the same bf16 q, k, v (what gptcli does on CPU), forward + backward, and a whole training step
of the CPU recipe (configs/shakespeare-char-cpu.yaml) each way and in fp32, alternated.

    .venv/bin/python benchmarks/bench_attention.py [--rounds 3] [--steps 50] [--profile]

--profile also prints where a bf16 step's time goes now, by torch operator (torch.profiler,
self time, 20 steps).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from gptcli.config import load_config
from gptcli.model import GPT, attention

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "shakespeare-char-cpu.yaml"


def bf16_kernel(q, k, v, bias, dropout):
    """torch's own choice under autocast: the attention kernel in bf16."""
    return attention._attend(q, k, v, bias, dropout)


@contextmanager
def attend_with(fn):
    kept = attention._sdpa
    attention._sdpa = fn
    try:
        yield
    finally:
        attention._sdpa = kept


def ms_per_call(fn, n: int) -> float:
    for _ in range(5):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def attention_only(dtype) -> float:
    q, k, v = (torch.randn(12, 4, 64, 32, dtype=dtype, requires_grad=True) for _ in range(3))

    def fwd_bwd():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = attention._sdpa(q, k, v, None, 0.0)
        y.float().sum().backward()

    return ms_per_call(fwd_bwd, 200)


def recipe_step(precision: str):
    """One training step of the CPU recipe's model on a fixed batch, as a function."""
    cfg = load_config(RECIPE, []).model
    torch.manual_seed(0)
    model = GPT(cfg, 65)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x, y = torch.randint(65, (12, 64)), torch.randint(65, (12, 64))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def training_step(precision: str, steps: int) -> float:
    return ms_per_call(recipe_step(precision), steps)


def profile_step() -> None:
    from torch.profiler import profile

    step = recipe_step("bf16")
    ms_per_call(step, 5)
    with profile() as prof:
        for _ in range(20):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print("a bf16 step by operator (self time, share of all operators):")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]:
        print(f"  {e.key[:60]:60} {e.self_cpu_time_total / total:6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per call")
    print("attention fwd+bwd (12 x 4 heads x 64 x 32): bf16 kernel | fp32 of bf16 inputs")
    for _ in range(args.rounds):
        with attend_with(bf16_kernel):
            slow = attention_only(torch.bfloat16)
        fast = attention_only(torch.bfloat16)
        print(f"  {slow:6.2f} | {fast:6.2f}   ratio {slow / fast:.2f}x")
    print("training step, CPU recipe: fp32 | bf16 with bf16 attention | bf16 with fp32 attention")
    for _ in range(args.rounds):
        fp32 = training_step("fp32", args.steps)
        with attend_with(bf16_kernel):
            before = training_step("bf16", args.steps)
        after = training_step("bf16", args.steps)
        print(
            f"  {fp32:6.2f} | {before:6.2f} | {after:6.2f}   "
            f"fp32/after {fp32 / after:.2f}x, before/after {before / after:.2f}x"
        )
    if args.profile:
        profile_step()


if __name__ == "__main__":
    main()
