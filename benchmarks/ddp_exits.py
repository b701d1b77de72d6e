"""How often a 2-process torchrun training ends cleanly: runs the same tiny demo training N times
in a row and counts the exit codes (every one must be 0; issue 19 saw 1 in 6 end in SIGABRT).

    .venv/bin/python benchmarks/ddp_exits.py [--runs 50] [--data data/demo]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--data", default="data/demo")
    args = ap.parse_args()
    sets = {"data.dir": args.data, "model.n_layer": 2, "model.n_embd": 64, "model.block_size": 32,
            "train.max_iters": 3, "train.eval_interval": 3, "train.eval_iters": 2}  # fmt: skip
    codes: collections.Counter[int] = collections.Counter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=2", "-m", "gptcli", "train", "--config", "configs/demo.yaml",
                   "--out", out, "--force"]  # fmt: skip
        command += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
        for i in range(args.runs):
            done = subprocess.run(command, capture_output=True, text=True)
            codes[done.returncode] += 1
            if done.returncode:
                print(f"run {i + 1}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    seconds = time.perf_counter() - start
    print(f"{args.runs} runs in {seconds:.0f} s: exit codes {dict(codes)}")
    sys.exit(0 if set(codes) == {0} else 1)


if __name__ == "__main__":
    main()
