"""gptcli sample against nanoGPT's sample.py, whole processes alternated: one sample of
--tokens new tokens from the same weights (6 layers, 6 heads, 384 wide, block 1024, char-level
tiny-shakespeare vocabulary, CPU), start-up and checkpoint loading included. nanoGPT samples in
fp32 on a CPU; gptcli runs in its default precision (auto: bf16 on a CPU with native bf16) and
again with --precision fp32.

    python benchmarks/bench_sample_nanogpt.py --nanogpt PATH/TO/nanoGPT [--rounds 3]
        [--tokens 1000] [--corpus ../shared/data/tinyshakespeare.txt] [--work DIR]

The weights are a gptcli run trained for a few steps (what they say does not change the time:
both tools generate exactly --tokens tokens), written also as nanoGPT's ckpt.pt with nanoGPT's
parameter names. nanoGPT runs unmodified: its generate re-runs the whole context for every
token; gptcli's keeps a KV cache. Prompt, temperature 0.8, top-k 200 and seed are the same.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from bench_nanogpt import prepare, timed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptcli.checkpoint import load_model  # noqa: E402

SIZE = {"model.n_layer": 6, "model.n_head": 6, "model.n_embd": 384, "model.block_size": 1024}
PROMPT = "ROMEO:"


def train_weights(data: Path, run: Path) -> None:
    sets = {**SIZE, "data.dir": data, "train.max_iters": 5, "train.batch_size": 2,
            "train.eval_iters": 1, "train.final_eval": "false",
            "train.precision": "fp32"}  # fmt: skip
    recipe = REPO / "configs/shakespeare-char-cpu.yaml"
    command = [sys.executable, "-m", "gptcli", "train", "--config", str(recipe), "--out", str(run),
               "--force"]  # fmt: skip
    command += [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    subprocess.run(command, check=True, cwd=REPO, capture_output=True)


def nanogpt_name(name: str) -> str:
    if name == "positions.wpe.weight":
        return "transformer.wpe.weight"
    if name == "lm_head.weight":
        return name
    return "transformer." + name.replace("blocks.", "h.", 1)


def write_nanogpt_checkpoint(run: Path, data: Path, out: Path) -> None:
    model, _, ckpt = load_model(run, "latest")
    mc = ckpt.config.model
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": {nanogpt_name(k): v for k, v in model.state_dict().items()},
            "model_args": dict(n_layer=mc.n_layer, n_head=mc.n_head, n_embd=mc.n_embd,
                               block_size=mc.block_size, bias=mc.bias,
                               vocab_size=model.vocab_size, dropout=0.0),  # fmt: skip
            "config": {"dataset": str(data)},  # where sample.py finds meta.pkl
        },
        out / "ckpt.pt",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nanogpt", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared/data/tinyshakespeare.txt")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_sample"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare(args.corpus, args.work)
    run, nano = args.work / "gptcli-run", args.work / "nanogpt-out"
    train_weights(data, run)
    write_nanogpt_checkpoint(run, data, nano)
    sample = ["--temperature=0.8", "--top_k=200", f"--max_new_tokens={args.tokens}"]
    nano_cmd = [sys.executable, "sample.py", "--init_from=resume", f"--out_dir={nano}",
                f"--start={PROMPT}", "--num_samples=1", "--device=cpu", "--compile=False",
                *sample]  # fmt: skip
    ours_cmd = [sys.executable, "-m", "gptcli", "sample", "--checkpoint", str(run), "--which",
                "latest", "--prompt", PROMPT, "--num-samples", "1", "--device", "cpu",
                *(a.replace("_", "-") for a in sample)]  # fmt: skip
    print(f"machine: {torch.get_num_threads()} torch threads; {args.tokens} new tokens, 6 x 384, "
          "block 1024; nanoGPT in fp32 (its CPU default), gptcli in its default and in "
          "fp32")  # fmt: skip
    ratios, fp32_ratios = [], []
    for i in range(args.rounds):
        seed = [f"--seed={1337 + i}"]
        t_nano = timed(nano_cmd + seed, args.nanogpt, args.work / f"nano-{i}.log")
        t_ours = timed(ours_cmd + seed, REPO, args.work / f"gptcli-{i}.log")
        fp32 = [*ours_cmd, *seed, "--precision", "fp32"]
        t_fp32 = timed(fp32, REPO, args.work / f"gptcli-fp32-{i}.log")
        ratios.append(t_nano / t_ours)
        fp32_ratios.append(t_nano / t_fp32)
        print(f"round {i}: nanoGPT {t_nano:.2f} s, gptcli {t_ours:.2f} s ({ratios[-1]:.1f}x), "
              f"gptcli --precision fp32 {t_fp32:.2f} s ({fp32_ratios[-1]:.1f}x)",
              flush=True)  # fmt: skip
    for name, rs in (("gptcli (default precision)", ratios), ("gptcli fp32", fp32_ratios)):
        print(f"nanoGPT time / {name} time: median {statistics.median(rs):.1f}x over "
              f"{len(rs)} alternated rounds ({', '.join(f'{r:.1f}' for r in rs)})")  # fmt: skip


if __name__ == "__main__":
    main()
