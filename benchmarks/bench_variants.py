"""Training speed of every position x norm variant, relative to learned + layernorm; with
--blocks, of every attention and MLP choice, relative to the standard block.

Measures forward + backward + AdamW steps on random tokens at the nanoGPT CPU shakespeare size
(4 layers, 4 heads, 128 wide, block 64, batch 12, vocab 65) unless told otherwise. Variants are
timed in interleaved rounds and each reports its median step time, so a noisy machine slows all
of them alike; read the ratios, not the absolute numbers.

    .venv/bin/python benchmarks/bench_variants.py [--rounds 5] [--steps 20] [--device cpu]
        [--precision fp32|bf16] [--threads N] [--norms layernorm,...]
    .venv/bin/python benchmarks/bench_variants.py --blocks

--precision bf16 steps under bf16 autocast (the CPU recipe's `auto` on a CPU with native bf16);
--threads 1 is what each run of a sweep with --jobs 2 gets on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings

import torch

from gptcli.config import ModelConfig
from gptcli.device import autocast
from gptcli.model import GPT
from gptcli.model.norms import NORMS
from gptcli.model.positions import POSITIONS

# The attention and MLP choices, each on RoPE + RMSNorm (the Llama block's other parts); the
# gated MLPs at the standard MLP's parameter count (hidden width 2/3, rounded).
BLOCKS = {
    "standard": {"norm": "rmsnorm"},
    "swiglu": {"norm": "rmsnorm", "mlp": "swiglu"},
    "geglu": {"norm": "rmsnorm", "mlp": "geglu"},
    "gqa (2 kv heads)": {"norm": "rmsnorm", "n_kv_head": 2},
    "mqa (1 kv head)": {"norm": "rmsnorm", "n_kv_head": 1},
    "qk_norm": {"norm": "rmsnorm", "qk_norm": "rmsnorm"},
    "relu2": {"norm": "rmsnorm", "activation": "relu2"},
}


def step_time(model, opt, x, y, steps: int, precision: str = "fp32") -> float:
    start = time.perf_counter()
    for _ in range(steps):
        with autocast(x.device, precision):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def chosen_variants(args) -> tuple[dict[str, dict], str]:
    """The variants' config keys by name, and the name of the one the others are timed against."""
    if args.blocks:
        return {name: {"position": "rope", **keys} for name, keys in BLOCKS.items()}, "standard"
    norms = args.norms.split(",") if args.norms else NORMS.names()
    variants = {f"{p} {n}": {"position": p, "norm": n}
                for p, n in itertools.product(POSITIONS.names(), norms)}  # fmt: skip
    return variants, f"learned {'layernorm' if 'layernorm' in norms else norms[0]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--blocks", action="store_true", help="attention and MLP choices")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--norms", help="comma-separated norms to keep (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(args.vocab, (args.batch, args.block), generator=g).to(device)
    y = torch.randint(args.vocab, (args.batch, args.block), generator=g).to(device)
    variants, base_name = chosen_variants(args)
    runs = {}
    for name, keys in variants.items():
        cfg = ModelConfig(
            n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
            block_size=args.block, bias=False, **keys,
        )  # fmt: skip
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GPT(cfg, args.vocab).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        step_time(model, opt, x, y, 3, args.precision)  # warm-up
        runs[name] = (model, opt, [])
    for _ in range(args.rounds):
        for model, opt, times in runs.values():
            times.append(step_time(model, opt, x, y, args.steps, args.precision))

    tokens = args.batch * args.block
    base = statistics.median(runs[base_name][2])
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"{args.n_layer} layers x {args.n_embd} wide, block {args.block}, batch {args.batch}, "
        f"{args.precision}; "
        f"median of {args.rounds} rounds x {args.steps} steps"
    )
    print(f"{'variant':<22} {'params':>9} {'ms/step':>8} {'tokens/s':>10} {'step / base':>12}")
    worst = 0.0
    for name, (model, _, times) in runs.items():
        t = statistics.median(times)
        worst = max(worst, t / base)
        print(f"{name:<22} {model.num_params():>9,} {t * 1e3:8.2f} {tokens / t:10,.0f} "
              f"{t / base:12.2f}")  # fmt: skip
    print(f"slowest variant: {worst:.2f}x the {base_name} step time")

if __name__ == "__main__":
    main()
