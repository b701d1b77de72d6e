"""Does `auto` pick the faster precision on this CPU? For each shipped model: fp32 against bf16,
timed long and alternated (the truth), beside what `auto` chose in its own short measurement
(gptcli.autotune, with a fresh cache) and what that measurement cost.

    .venv/bin/python benchmarks/bench_precision.py [--rounds 5] [--threads 2,1]

Training: a whole step (forward, backward, AdamW) of the CPU recipe's model (configs/demo.yaml
and configs/shakespeare-char-cpu.yaml share it: 4 x 128, block 64, batch 12, vocab 65), at each
thread count (torch's default is a lone run's; 1 is each of two trainings sharing 2 cores).
Sampling: ms per token over 300 tokens from a 1-token prompt, with bf16 cast and packed as
`gptcli sample` runs it, for that model and for the 6 x 384 sampling model (block 1024).
Prints, per case, each precision's median, auto's choice, its time over the faster's (auto is
within 5% when that is <= 1.05) and the seconds auto's decision took.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch
from bench_variants import step_time  # this folder is on the path when a script runs

from gptcli import autotune, cpu
from gptcli.config import ModelConfig
from gptcli.device import autocast
from gptcli.generate import generate, sampling_precision
from gptcli.model import GPT
from gptcli.model.inference import for_inference
from gptcli.training.precision import train_precision

RECIPE = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False,
                     activation="gelu")  # fmt: skip
SAMPLING = ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=1024, bias=False)
VOCAB = 65


def token_seconds(model, precision: str, tokens: int = 300) -> float:
    idx = torch.zeros(1, 1, dtype=torch.long)
    ctx = lambda: autocast(torch.device("cpu"), precision)  # noqa: E731
    start = time.perf_counter()
    list(generate(model, idx, tokens, temperature=0.8, autocast_ctx=ctx))
    return (time.perf_counter() - start) / tokens


def decided(choose) -> tuple[str, float]:
    """auto's choice with an empty cache, and the seconds it took."""
    with tempfile.TemporaryDirectory() as cache:
        os.environ["GPTCLI_CACHE_DIR"] = cache
        start = time.perf_counter()
        choice = choose()
        return choice, time.perf_counter() - start


def training_case(rounds: int) -> tuple[dict[str, float], str, float]:
    torch.manual_seed(0)
    models = {p: GPT(RECIPE, VOCAB).train() for p in ("fp32", "bf16")}
    opts = {p: torch.optim.AdamW(m.parameters(), lr=1e-3) for p, m in models.items()}
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(VOCAB, (12, RECIPE.block_size), generator=g) for _ in range(2))
    times = {p: [] for p in models}
    for p in models:
        step_time(models[p], opts[p], x, y, 3, p)  # warm-up
    for _ in range(rounds):
        for p in models:
            times[p].append(step_time(models[p], opts[p], x, y, 20, p))
    cpu_dev = torch.device("cpu")
    choice, cost = decided(lambda: train_precision("auto", GPT(RECIPE, VOCAB), 12, cpu_dev))
    return {p: statistics.median(t) for p, t in times.items()}, choice, cost


def sampling_case(cfg: ModelConfig, rounds: int) -> tuple[dict[str, float], str, float]:
    torch.manual_seed(0)
    fp32 = GPT(cfg, VOCAB).eval()
    packed = copy.deepcopy(fp32)
    for_inference(packed, torch.bfloat16, pack=True)
    models = {"fp32": fp32, "bf16": packed}
    times = {p: [] for p in models}
    for p, m in models.items():
        token_seconds(m, p, 20)  # warm-up
    for _ in range(rounds):
        for p, m in models.items():
            times[p].append(token_seconds(m, p))
    choice, cost = decided(lambda: sampling_precision("auto", torch.device("cpu"), fp32))
    return {p: statistics.median(t) for p, t in times.items()}, choice, cost


def report(name: str, times: dict[str, float], choice: str, cost: float, unit: str) -> None:
    best = min(times.values())
    print(f"{name:<34} fp32 {times['fp32'] * 1e3:7.2f} {unit}  bf16 {times['bf16'] * 1e3:7.2f} "
          f"{unit}  fp32/bf16 {times['fp32'] / times['bf16']:.2f}x  auto: {choice} "
          f"({times[choice] / best:.3f} of the faster; decided in {cost:.2f} s)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default=f"{torch.get_num_threads()},1")
    args = ap.parse_args()
    print(f"CPU {cpu.describe()}; torch {torch.__version__}; autotune budget "
          f"{autotune.BUDGET} s; medians of {args.rounds} alternated rounds")  # fmt: skip
    if not cpu.has_native_bf16():
        print("no native bf16 at this level: auto is fp32 without measuring")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        tag = f"{threads} thread{'s' if threads > 1 else ''}"
        report(f"train 4x128 recipe, {tag}", *training_case(args.rounds), "ms/step")
        report(f"sample 4x128 recipe, {tag}", *sampling_case(RECIPE, args.rounds), "ms/tok")
        report(f"sample 6x384 block 1024, {tag}", *sampling_case(SAMPLING, args.rounds), "ms/tok")


if __name__ == "__main__":
    main()
