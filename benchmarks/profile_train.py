"""Where a CPU training run's time goes: a whole `gptcli train` of the CPU recipe
(configs/shakespeare-char-cpu.yaml, nanoGPT's), timed by phase.

    python benchmarks/profile_train.py [--iters 300] [--precision auto|fp32|bf16] [--runs 1]

The run is the real one (the CLI's own code path, in this process), with timers around its
parts. Each part's time is its own, without the parts inside it (a forward inside an
evaluation is evaluation time): start-up (Python and imports, measured apart as a process that
imports what train imports), building the run (data, model, optimizer), and per training step
the batch, forward, backward, clip + optimizer, the loop's own Python between them, logging,
the evaluations every eval_interval steps, checkpoints, and the final full-split evaluation.
Prepare the data first: gptcli prepare --dataset shakespeare --tokenizer char
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Phases:
    """Exclusive time per named phase: time inside a nested phase is the inner one's alone."""

    def __init__(self):
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list] = []  # [name, started, time in phases inside, whole]

    def wrap(self, owner, attr: str, name: str, whole: bool = False) -> None:
        """whole: what runs inside counts as this phase (an evaluation's forwards)."""
        inner = getattr(owner, attr)
        phases = self

        def timed(*args, **kwargs):
            if phases.stack and phases.stack[-1][3]:
                return inner(*args, **kwargs)  # inside a whole phase: its time
            phases.stack.append([name, time.perf_counter(), 0.0, whole])
            try:
                return inner(*args, **kwargs)
            finally:
                entry = phases.stack.pop()
                spent = time.perf_counter() - entry[1]
                phases.total[name] += spent - entry[2]
                phases.calls[name] += 1
                if phases.stack:
                    phases.stack[-1][2] += spent

        setattr(owner, attr, timed)


def import_seconds() -> float:
    """A bare process that imports what `gptcli train` imports (torch with it): the start-up
    that this process paid before its timers began."""
    start = time.perf_counter()
    imports = "import gptcli.cli, gptcli.cli.train, gptcli.training.loop"
    subprocess.run([sys.executable, "-c", imports], check=True, cwd=REPO)
    return time.perf_counter() - start


def dynamo_import_seconds() -> float:
    """What importing torch._dynamo adds to a process that has torch: every torch.optim optimizer
    pays it when built; gptcli's CPU AdamW (training/optim.py) does not."""
    code = ("import time, torch; t = time.perf_counter(); import torch._dynamo; "
            "print(time.perf_counter() - t)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(done.stdout)


def profile(iters: int, precision: str, out: Path) -> tuple[Phases, float, int]:
    import torch

    from gptcli.cli import main
    from gptcli.data.dataset import TokenDataset
    from gptcli.model import GPT
    from gptcli.training import loop

    phases = Phases()
    phases.wrap(loop, "build_run", "build the run")
    phases.wrap(loop.Loop, "fit", "loop's own Python")
    phases.wrap(TokenDataset, "batch", "batch")
    phases.wrap(GPT, "forward", "forward")
    phases.wrap(torch.Tensor, "backward", "backward")
    phases.wrap(loop.Loop, "clip_and_step", "clip + optimizer")
    phases.wrap(loop.Loop, "log_step", "logging")
    phases.wrap(loop.Loop, "evaluate", "evaluations (eval_iters)", whole=True)
    phases.wrap(loop, "save", "checkpoints")
    phases.wrap(loop.Loop, "full_eval", "final full-split eval", whole=True)
    argv = ["gptcli", "train", "--config", str(REPO / "configs/shakespeare-char-cpu.yaml"),
            "--out", str(out), "--force", "--set", f"train.max_iters={iters}",
            "--set", f"train.precision={precision}"]  # fmt: skip
    sys.argv = argv
    start = time.perf_counter()
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return phases, time.perf_counter() - start, iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    startup = import_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        phases, wall, iters = profile(args.iters, args.precision, Path(tmp) / "run")
    inside = sum(phases.total.values())
    rows = [("start-up (Python, torch, gptcli imports)", startup, 1)]
    rows += [("CLI and config, outside the phases", wall - inside, 1)]
    rows += [(name, t, phases.calls[name]) for name, t in phases.total.items()]
    whole = startup + wall
    print(f"\n{iters} iterations, precision {args.precision}: whole process about {whole:.1f} s "
          f"({wall:.1f} s after start-up)")  # fmt: skip
    dynamo = dynamo_import_seconds()
    print(f"not paid: importing torch._dynamo, {dynamo:.2f} s (what torch.optim costs)")
    print(f"{'phase':44} {'s':>7} {'ms/step':>8} {'share':>6} {'calls':>6}")
    for name, seconds, calls in sorted(rows, key=lambda r: -r[1]):
        print(f"{name:44} {seconds:7.2f} {1000 * seconds / iters:8.2f} "
              f"{seconds / whole:6.1%} {calls:6d}")  # fmt: skip


if __name__ == "__main__":
    main()
