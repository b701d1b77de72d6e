"""Where a sample's time goes, in one process: a token's step with fp32 weights, with bf16
weights cast once (model/inference.py, unpacked) and cast and packed for oneDNN (what
`gptcli sample` does on a CPU with native bf16), alternated; the packed model's step through
model/decode.forward_cached (what generate runs) against GPT.forward; building a model to load
(GPT.to_load) against building it with its random init; and the interpreter's teardown after
torch, which `sample` and `eval` skip. --widths instead: fp32 against bf16 packed across model
widths, where `sample --precision auto` changes to bf16 on a CPU.

    .venv/bin/python benchmarks/bench_decode.py [--tokens 500] [--rounds 3] [--widths]

The model is the sampling benchmark's (6 layers x 384, block 1024, 65-token vocabulary),
randomly initialised; every variant generates the same number of tokens from a 1-token prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import subprocess
import sys
import time

import torch

import gptcli.generate
from gptcli.config import ModelConfig
from gptcli.cpu import has_native_bf16
from gptcli.device import autocast
from gptcli.generate import generate
from gptcli.model import GPT
from gptcli.model.inference import can_pack, for_inference

CFG = ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=1024, bias=False)


def ms_per_token(model, precision: str, tokens: int) -> float:
    idx = torch.zeros(1, 1, dtype=torch.long)
    ctx = lambda: autocast(torch.device("cpu"), precision)  # noqa: E731
    list(generate(model, idx, 10, temperature=0.8, autocast_ctx=ctx))  # warm-up
    start = time.perf_counter()
    list(generate(model, idx, tokens, temperature=0.8, autocast_ctx=ctx))
    return (time.perf_counter() - start) / tokens * 1e3


@contextlib.contextmanager
def general_forward():
    """generate() stepping through GPT.forward instead of the flat forward_cached."""
    flat = gptcli.generate.forward_cached
    gptcli.generate.forward_cached = lambda model, idx, cache: model(idx, cache=cache)[0]
    try:
        yield
    finally:
        gptcli.generate.forward_cached = flat


def seconds(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def process_seconds(code: str, n: int = 3) -> float:
    return seconds(lambda: subprocess.run([sys.executable, "-c", code], check=True), n)


def widths(tokens: int, rounds: int) -> None:
    """fp32 against bf16 (cast and packed) per token across model widths: where `sample`'s auto
    precision (measured per model: generate.faster_token) can be expected to switch to bf16."""
    print(f"ms per token over {tokens} tokens, median of {rounds} alternated: fp32 | bf16 packed")
    for n_layer, n_embd, n_head in ((4, 128, 4), (6, 192, 6), (6, 256, 8), (6, 320, 5),
                                    (6, 384, 6), (4, 512, 8)):  # fmt: skip
        torch.manual_seed(0)
        cfg = ModelConfig(
            n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=1024, bias=False
        )
        fp32 = GPT(cfg, 65).eval()
        packed = copy.deepcopy(fp32)
        for_inference(packed, torch.bfloat16, pack=True)
        a, b = [], []
        for _ in range(rounds):
            a.append(ms_per_token(fp32, "fp32", tokens))
            b.append(ms_per_token(packed, "bf16", tokens))
        a, b = statistics.median(a), statistics.median(b)
        print(f"  {n_layer} x {n_embd}: {a:6.2f} | {b:6.2f}   fp32/bf16 {a / b:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--widths", action="store_true", help="only fp32 vs bf16 across widths")
    args = ap.parse_args()
    if args.widths:
        widths(300, args.rounds)
        return
    torch.manual_seed(0)
    fp32 = GPT(CFG, 65).eval()
    cast, packed = copy.deepcopy(fp32), copy.deepcopy(fp32)
    for_inference(cast, torch.bfloat16, pack=False)
    for_inference(packed, torch.bfloat16, pack=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16 "
          f"{has_native_bf16()}, oneDNN packing {can_pack(torch.bfloat16)}; ms per token "
          f"over {args.tokens} tokens: fp32 | bf16 cast | bf16 cast and packed")  # fmt: skip
    for _ in range(args.rounds):
        a = ms_per_token(fp32, "fp32", args.tokens)
        b = ms_per_token(cast, "bf16", args.tokens)
        c = ms_per_token(packed, "bf16", args.tokens)
        print(f"  {a:6.2f} | {b:6.2f} | {c:6.2f}   fp32/packed {a / c:.2f}x, cast/packed "
              f"{b / c:.2f}x")  # fmt: skip
    print("the packed model's ms per token: GPT.forward | forward_cached")
    for _ in range(args.rounds):
        with general_forward():
            a = ms_per_token(packed, "bf16", args.tokens)
        b = ms_per_token(packed, "bf16", args.tokens)
        print(f"  {a:6.2f} | {b:6.2f}   {a / b:.2f}x")
    built = seconds(lambda: GPT(CFG, 65))
    to_load = seconds(lambda: GPT.to_load(CFG, 65))
    print(f"building the model: with its init {built:.3f} s, GPT.to_load {to_load:.3f} s")
    normal = process_seconds("import torch")
    at_once = process_seconds("import torch, os; os._exit(0)")
    print(f"a process that imports torch: {normal:.2f} s ending normally, {at_once:.2f} s with "
          f"os._exit: teardown {normal - at_once:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
