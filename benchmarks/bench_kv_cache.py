"""KV cache memory and cached sampling speed of grouped-query and multi-query attention against
full multi-head attention on the same model.

The model is bench_generate.py's (6 layers, 6 heads, 384 wide, block 1024, vocab 65, RoPE,
random weights) with 6, 3, 2 and 1 key/value heads. Each generates --tokens tokens greedily from
a 1-token prompt with the KV cache, for each batch size, in interleaved rounds (the median is
reported, so a noisy machine slows all alike). Cache memory is what new_cache allocates for the
whole window: 2 (keys, values) x layers x batch x kv heads x block x head size x 4 bytes.

    .venv/bin/python benchmarks/bench_kv_cache.py [--tokens 1000] [--batch 1 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gptcli.config import ModelConfig
from gptcli.generate import generate
from gptcli.model import GPT


def cache_bytes(model: GPT, batch: int) -> int:
    cache = model.new_cache(batch, model.cfg.block_size)
    return sum(layer.k.numel() * layer.k.element_size() * 2 for layer in cache)


def seconds(model: GPT, batch: int, tokens: int) -> float:
    idx = torch.zeros(batch, 1, dtype=torch.long)
    start = time.perf_counter()
    for _ in generate(model, idx, tokens, temperature=0.0):
        pass
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--kv-heads", type=int, nargs="+", default=[6, 3, 2, 1])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    models = {}
    for kv in args.kv_heads:
        cfg = ModelConfig(n_layer=6, n_head=6, n_kv_head=kv, n_embd=384, block_size=1024,
                          position="rope", bias=False)  # fmt: skip
        torch.manual_seed(0)
        models[kv] = GPT(cfg, 65).eval()
    times = {(kv, b): [] for kv in models for b in args.batch}
    for _ in range(args.rounds):
        for (kv, batch), runs in times.items():
            runs.append(seconds(models[kv], batch, args.tokens))
    full = max(models)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; 6 layers x 384 wide, "
          f"block 1024; {args.tokens} tokens, median of {args.rounds} rounds")  # fmt: skip
    print(f"{'kv heads':>8} {'batch':>5} {'params':>11} {'cache MiB':>9} {'s':>7} "
          f"{'tokens/s':>9} {'speed / MHA':>11}")  # fmt: skip
    for (kv, batch), runs in times.items():
        t = statistics.median(runs)
        base = statistics.median(times[(full, batch)])
        mib = cache_bytes(models[kv], batch) / 2**20
        print(f"{kv:>8} {batch:>5} {models[kv].num_params():>11,} {mib:>9.1f} {t:>7.2f} "
              f"{batch * args.tokens / t:>9,.0f} {base / t:>11.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
