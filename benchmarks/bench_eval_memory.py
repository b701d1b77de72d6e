"""Peak memory and time of `gptcli eval` at long contexts, for every position scheme.

Trains (or reuses) one 4-layer, 4-head, 128-wide model per scheme on tiny-shakespeare char
(block 64, --steps steps), then runs `gptcli eval --context C --max-tokens N` as a whole process
for each context and reports its peak resident memory (the process's own ru_maxrss at exit)
and wall time. The same N tokens are scored at every context (one window of 64k, four of 16k,
sixteen of 4k by default), so the times compare.

    .venv/bin/python benchmarks/bench_eval_memory.py [--contexts 4096 16384 65536] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

POSITIONS = ["none", "sincos", "learned", "relative", "rope", "alibi"]


def gptcli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptcli", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip


def train(out: Path, data: Path, position: str, steps: int) -> Path:
    run = out / position
    if (run / "checkpoints.json").is_file():
        return run
    sets = {"data.dir": data, "model.n_layer": 4, "model.n_head": 4, "model.n_embd": 128,
            "model.block_size": 64, "model.position": position, "train.max_iters": steps,
            "train.eval_interval": steps, "train.final_eval": "false"}  # fmt: skip
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    done = gptcli("train", "--config", "configs/demo.yaml", *args, "--out", str(run), "--force")
    if done.returncode:
        sys.exit(done.stderr)
    return run


# The CLI in this process, and its peak resident memory on the last line of stderr at exit.
PEAK = (
    "import resource, runpy, sys\n"
    "sys.argv = ['gptcli', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('gptcli', run_name='__main__')\n"
    "finally:\n"
    "    print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def measure(run: Path, context: int, max_tokens: int) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, "eval", "--checkpoint", str(run), "--context", str(context),
         "--max-tokens", str(max_tokens), "--format", "json"],
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    peak_mib = round(int(lines[-1].split()[1]) / 1024)
    if done.returncode:
        return {"context": context, "refused": lines[0].removeprefix("error: ")}
    [record] = json.loads(done.stdout)
    return {"context": context, "seconds": round(seconds, 1), "peak_mib": peak_mib,
            "loss": round(record["loss"], 4), "tokens": record["tokens"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--max-tokens", type=int, default=65537)
    ap.add_argument("--positions", nargs="+", default=POSITIONS)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--data", default="data/shakespeare_char_bench")
    ap.add_argument("--out", default="out/bench_eval_memory")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    data, out = Path(args.data), Path(args.out)
    if not (data / "meta.json").is_file():
        gptcli("prepare", "--dataset", "shakespeare", "--tokenizer", "char", "--out", str(data))
    rows = []
    for position in args.positions:
        run = train(out, data, position, args.steps)
        for context in sorted(args.contexts):
            row = {"position": position, **measure(run, context, args.max_tokens)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
