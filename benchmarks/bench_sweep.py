"""How much sooner a sweep finishes with --jobs 2 than with --jobs 1 on this machine: 4 small
runs of nanoGPT's CPU recipe (char-level tiny-shakespeare), the two settings alternated.

    python benchmarks/bench_sweep.py [--iters 300] [--rounds 2] [--corpus ...] [--work DIR]

With --jobs N each run gets cores / N threads, so --jobs 1 trains one run on every core and
--jobs 2 trains two runs on half the cores each.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared/data/tinyshakespeare.txt")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_sweep"))
    args = ap.parse_args()
    data = args.work / "data"
    subprocess.run([sys.executable, "-m", "gptcli", "prepare", "--input", str(args.corpus),
                    "--tokenizer", "char", "--out", str(data), "--force"],
                   check=True, cwd=REPO, capture_output=True)  # fmt: skip
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for jobs in (1, 2):
            out = args.work / f"jobs{jobs}"
            shutil.rmtree(out, ignore_errors=True)
            sets = [f"data.dir={data}", f"train.max_iters={args.iters}",
                    f"train.lr_decay_iters={args.iters}"]  # fmt: skip
            command = [sys.executable, "-m", "gptcli", "sweep", "--config",
                       str(REPO / "configs/shakespeare-char-cpu.yaml"), "--vary",
                       "model.position=learned,rope", "--seeds", "1,2", "--jobs", str(jobs),
                       "--out", str(out), *(a for s in sets for a in ("--set", s))]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True, cwd=REPO, capture_output=True)
            times[jobs].append(time.perf_counter() - start)
            print(f"--jobs {jobs}: {times[jobs][-1]:.1f} s", flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(
        f"4 runs x {args.iters} steps: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s (medians of "
        f"{args.rounds}); --jobs 2 finishes {one / two:.2f}x sooner"
    )


if __name__ == "__main__":
    main()
