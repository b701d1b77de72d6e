"""The shipped position study, whole: how much sooner it finishes than with the code at an
anchor, and whether it still finds the same thing.

    python benchmarks/bench_study.py [--anchor REV] [--rounds 1]
        [--grid configs/sweeps/positions.yaml]

Runs `gptcli sweep --grid GRID --jobs 2` as a whole process with the code at REV (a git worktree)
and with this tree, alternated, each into a fresh directory, and prints the wall time of each
and their ratio; then each variant's final full-split val loss (mean over the grid's seeds) per
code. Prepare the data first: gptcli prepare --dataset shakespeare --tokenizer char
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(code: Path, grid: str, out: Path) -> float:
    """The whole sweep with the gptcli in code (started there, so `python -m gptcli` and the
    trainings it starts import that code)."""
    command = [sys.executable, "-m", "gptcli", "sweep", "--grid", grid, "--jobs", "2", "--out",
               str(out)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, cwd=code, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def final_losses(out: Path) -> dict[str, list[float]]:
    """Variant (the run's name less its seed) -> the final full_val_loss of each seed."""
    losses = defaultdict(list)
    for metrics in sorted(out.glob("*/metrics.jsonl")):
        records = [json.loads(line) for line in metrics.open()]
        final = [r["full_val_loss"] for r in records if "full_val_loss" in r]
        variant = ",".join(p for p in metrics.parent.name.split(",") if not p.startswith("seed="))
        losses[variant].append(final[-1])
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--anchor", default="HEAD~1")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--grid", default="configs/sweeps/positions.yaml")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        anchor = Path(tmp) / "anchor"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(anchor), args.anchor],
                       cwd=REPO, check=True)  # fmt: skip
        (anchor / "data").mkdir(exist_ok=True)
        (anchor / "data/shakespeare_char").symlink_to(REPO / "data/shakespeare_char")
        times, losses = defaultdict(list), {}
        try:
            for round_ in range(1, args.rounds + 1):
                for name, code in (("anchor", anchor), ("this tree", REPO)):
                    out = Path(tmp) / f"{name.replace(' ', '-')}-{round_}"
                    times[name].append(sweep(code, args.grid, out))
                    losses[name] = final_losses(out)
                    print(f"round {round_}, {name}: {times[name][-1]:.1f} s", flush=True)
                ratio = times["anchor"][-1] / times["this tree"][-1]
                print(f"  anchor time / this tree's: {ratio:.2f}x", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(anchor)], cwd=REPO)
    print("final full-split val loss, mean over seeds (last round): anchor | this tree")
    for variant in sorted(losses["this tree"]):
        a, b = (statistics.mean(losses[n][variant]) for n in ("anchor", "this tree"))
        print(f"  {variant:<28} {a:.4f} | {b:.4f}  ({b - a:+.4f})")


if __name__ == "__main__":
    main()
