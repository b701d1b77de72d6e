"""gptcli against nanoGPT's train.py on nanoGPT's CPU recipe (char-level tiny-shakespeare,
4 layers, 4 heads, 128 wide, block 64, batch 12): whole-process time and the final checkpoint's
full-split val loss, the two tools alternated run by run on the same machine.

    python benchmarks/bench_nanogpt.py --nanogpt PATH/TO/nanoGPT [--iters 2000]
        [--seeds 1337,1338,1339] [--corpus ../shared/data/tinyshakespeare.txt]
        [--set train.precision=bf16 ...] [--work DIR]

nanoGPT is not vendored: pass a checkout of karpathy/nanoGPT. It runs unmodified; its seed is
fixed at 1337 in train.py, so each seed's offset is added by wrapping torch.manual_seed. Both
tools read the same token files (gptcli's char prepare; nanoGPT's int(n * 0.9) split is the
same). Both final checkpoints (2000 updates each) are scored by gptcli.evaluate: the whole val
split, non-overlapping windows of 64, every token once.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptcli.checkpoint import load_model  # noqa: E402
from gptcli.evaluate import score_tokens  # noqa: E402

NANO_ARGS = [
    "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
    "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0",
    "--always_save_checkpoint=True",
]  # fmt: skip
# Runs nanoGPT's train.py as its own script, with the seed offset added to its manual_seed.
SHIM = """
import runpy, sys, torch
offset = int(sys.argv[1])
sys.argv = ["train.py", "config/train_shakespeare_char.py", *sys.argv[2:]]
seed = torch.manual_seed
torch.manual_seed = lambda s: seed(s + offset)
runpy.run_path("train.py", run_name="__main__")
"""


def prepare(corpus: Path, work: Path) -> Path:
    data = work / "data"
    subprocess.run(
        [sys.executable, "-m", "gptcli", "prepare", "--input", str(corpus), "--tokenizer", "char",
         "--out", str(data), "--force"],
        check=True, cwd=REPO, capture_output=True,
    )  # fmt: skip
    meta = json.loads((data / "meta.json").read_text())
    chars = meta["tokenizer"]["chars"]
    with open(data / "meta.pkl", "wb") as f:  # what nanoGPT's train.py reads for vocab_size
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                     "stoi": {c: i for i, c in enumerate(chars)}}, f)  # fmt: skip
    return data


def timed(command: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def run_nanogpt(nanogpt: Path, data: Path, out: Path, iters: int, seed: int) -> float:
    args = [*NANO_ARGS, f"--dataset={data}", f"--out_dir={out}", f"--max_iters={iters}",
            f"--lr_decay_iters={iters}"]  # fmt: skip
    command = [sys.executable, "-c", SHIM, str(seed - 1337), *args]
    return timed(command, nanogpt, out.with_suffix(".log"))


def run_gptcli(data: Path, out: Path, iters: int, seed: int, extra: list[str]) -> float:
    sets = [f"data.dir={data}", f"train.max_iters={iters}", f"train.lr_decay_iters={iters}",
            f"train.seed={seed}", *extra]  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "gptcli",
        "train",
        "--config",
        str(REPO / "configs" / "shakespeare-char-cpu.yaml"),
        "--out",
        str(out),
        "--force",
    ]
    command += [arg for s in sets for arg in ("--set", s)]  # fmt: skip
    return timed(command, REPO, out.with_suffix(".log"))


def val_tokens(data: Path) -> np.ndarray:
    return np.memmap(data / "val.bin", dtype=np.uint16, mode="r")


def score_gptcli(out: Path, tokens: np.ndarray) -> float:
    model, _, _ = load_model(out, "latest")
    return score_tokens(lambda x: model(x)[0], tokens, 64).loss


def score_nanogpt(nanogpt: Path, out: Path, tokens: np.ndarray) -> float:
    sys.path.insert(0, str(nanogpt))
    from model import GPT, GPTConfig  # nanoGPT's own model.py

    ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    # nanoGPT returns every position's logits only when given targets.
    return score_tokens(lambda x: model(x, x.contiguous())[0], tokens, 64).loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nanogpt", type=Path, required=True)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seeds", default="1337,1338,1339")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared/data/tinyshakespeare.txt")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="gptcli --set")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_nanogpt"))
    ap.add_argument("--no-score", action="store_true", help="time only")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare(args.corpus, args.work)
    tokens = val_tokens(data)
    print(f"machine: {torch.get_num_threads()} torch threads; gptcli --set {args.sets}")
    rows = []
    for seed in map(int, args.seeds.split(",")):
        nano_out, ours_out = args.work / f"nano-{seed}", args.work / f"gptcli-{seed}"
        t_nano = run_nanogpt(args.nanogpt, data, nano_out, args.iters, seed)
        t_ours = run_gptcli(data, ours_out, args.iters, seed, args.sets)
        row = {"seed": seed, "nanogpt_s": t_nano, "gptcli_s": t_ours, "speedup": t_nano / t_ours}
        if not args.no_score:
            row["nanogpt_val"] = score_nanogpt(args.nanogpt, nano_out, tokens)
            row["gptcli_val"] = score_gptcli(ours_out, tokens)
        rows.append(row)
        print(json.dumps(row), flush=True)
    speedups = [r["speedup"] for r in rows]
    median = statistics.median(speedups)
    print(
        f"whole-process speedup (nanoGPT time / gptcli time): median {median:.3f}"
        f" over {len(rows)} alternated pairs ({', '.join(f'{s:.3f}' for s in speedups)})"
    )
    if not args.no_score:
        nano = statistics.mean(r["nanogpt_val"] for r in rows)
        ours = statistics.mean(r["gptcli_val"] for r in rows)
        print(
            f"full-split val loss, mean of {len(rows)} seeds: nanoGPT {nano:.4f}, "
            f"gptcli {ours:.4f}, gptcli - nanoGPT = {ours - nano:+.4f}"
        )


if __name__ == "__main__":
    main()
