"""Cached vs uncached generation speed.

Generates --tokens tokens from a 1-token prompt with a randomly initialised model (the default
is the issue's 6 layers, 384 wide, block 1024, fp32, CPU), once with the KV cache and once
re-running the whole context for every token (what nanoGPT's generate does), for each batch
size, in the same process. Greedy decoding, so both runs produce the same tokens (checked).

    .venv/bin/python benchmarks/bench_generate.py [--tokens 1000] [--batch 1 8] [--position learned]
"""

from __future__ import annotations

import argparse
import time

import torch

from gptcli.config import ModelConfig
from gptcli.generate import generate
from gptcli.model import GPT


def timed(model, idx, tokens: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = torch.stack(list(generate(model, idx, tokens, temperature=0.0, use_cache=use_cache)), 1)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-head", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=384)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--position", default="learned")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    cfg = ModelConfig(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block,
        position=args.position,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT(cfg, args.vocab).to(args.device).eval()
    print(
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"{args.n_layer} layers x {args.n_embd} wide, block {args.block}, position "
        f"{args.position}, fp32; {args.tokens} new tokens from a 1-token prompt"
    )
    print(f"{'batch':>5} {'cached tok/s':>13} {'uncached tok/s':>15} {'speed-up':>9}")
    for batch in args.batch:
        idx = torch.zeros(batch, 1, dtype=torch.long, device=args.device)
        timed(model, idx, 8, True)  # warm-up
        t_cached, a = timed(model, idx, args.tokens, True)
        t_plain, b = timed(model, idx, args.tokens, False)
        same = "" if torch.equal(a, b) else "  (outputs differ!)"
        n = batch * args.tokens
        speedup = t_plain / t_cached
        print(f"{batch:>5} {n / t_cached:13,.1f} {n / t_plain:15,.1f} {speedup:8.1f}x{same}")


if __name__ == "__main__":
    main()
