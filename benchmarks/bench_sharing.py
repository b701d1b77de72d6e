"""Trainings that share the cores: does each get its fair share of a lone run's throughput?

    python benchmarks/bench_sharing.py [--anchor REV] [--iters 300] [--rounds 2]
                                       [--modes auto threads turns] [--at-once 2 3]
                                       [--launch script|module]

Runs the CPU recipe (configs/shakespeare-char-cpu.yaml: nanoGPT's) as whole `gptcli train`
processes with default threads: one alone, then two started together, then three; each
training's throughput is its tokens over the time from its 20th step to its last (not the median
of its logged steps' tokens/s: taking turns, a step waits for one other step or for none, and
every tenth step is no fair sample of that). A run's fair share is the
lone run's throughput / the number of trainings. The anchor is the same measurement with the
code at REV (a git worktree; default HEAD~1), alternated round by round with this tree; this
tree runs once per train.share_cores mode asked (--modes; the anchor with its own defaults).
Each training starts as a user types it, through the gptcli console script (--launch script,
with PYTHONPATH naming the code to run), or as sweeps and torchrun start one (--launch module:
python -m gptcli): before ce48040 only the second counted as a training.
Prepare the data first: gptcli prepare --dataset shakespeare --tokenizer char
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gptcli.config import load_config  # noqa: E402


def trainings(code: Path, n: int, iters: int, out: Path, extra: list[str],
              launch: str = "script") -> list[float]:  # fmt: skip
    """n trainings started together with the gptcli in code; the tokens/s of each."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's default
    env["PYTHONPATH"] = str(code)  # the console script imports the gptcli found there first
    start = [str(Path(sys.executable).with_name("gptcli"))]
    if launch == "module":
        start = [sys.executable, "-m", "gptcli"]
    procs, dirs = [], []
    for i in range(n):
        run = out / f"{n}-{i}"
        dirs.append(run)
        command = [*start, "train", "--config",
                   str(REPO / "configs/shakespeare-char-cpu.yaml"), "--out", str(run), "--force",
                   "--set", f"train.max_iters={iters}", "--set", "train.eval_interval=100000",
                   "--set", "train.final_eval=false", "--set", "train.log_interval=10",
                   "--set", f"data.dir={REPO / 'data/shakespeare_char'}", *extra]  # fmt: skip
        # Started in code's directory: `python -m` imports the gptcli found there first too.
        procs.append(subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"a training failed ({proc.args})")
    cfg = load_config(REPO / "configs/shakespeare-char-cpu.yaml")
    tokens = cfg.train.batch_size * cfg.model.block_size * cfg.train.grad_accum
    speeds = []
    for run in dirs:
        records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
        steps = [r for r in records if "tokens_per_sec" in r and r["step"] >= 20]
        first, last = steps[0], steps[-1]
        speeds.append((last["step"] - first["step"]) * tokens / (last["time"] - first["time"]))
    return speeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--anchor", default="HEAD~1")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=["auto"], choices=["auto", "threads", "turns"])
    ap.add_argument("--at-once", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--launch", default="script", choices=["script", "module"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        anchor_dir = Path(tmp) / "anchor"
        codes = [("anchor", anchor_dir, [])]
        codes += [(f"this tree, {m}", REPO, ["--set", f"train.share_cores={m}"])
                  for m in args.modes]  # fmt: skip
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(anchor_dir), args.anchor],
                       cwd=REPO, check=True)  # fmt: skip
        try:
            for round_ in range(1, args.rounds + 1):
                for name, code, extra in codes:
                    start = (args.iters, Path(tmp) / "out", extra, args.launch)
                    lone = trainings(code, 1, *start)[0]
                    print(f"round {round_}, {name}: alone {lone:,.0f} tokens/s", flush=True)
                    for n in args.at_once:
                        speeds = trainings(code, n, *start)
                        share = ", ".join(f"{s:,.0f} ({s / lone:.0%} of alone)" for s in speeds)
                        print(f"  {n} at once: {share}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(anchor_dir)], cwd=REPO)


if __name__ == "__main__":
    main()
