"""The CUDA paths on one GPU, beside nanoGPT's train.py on the same GPU: nanoGPT's baby GPT
(configs/shakespeare-char.yaml: 6 layers x 384, block 256, batch 64, char tiny-shakespeare) in
fp32, bf16, fp16 with its GradScaler and bf16 with torch.compile; a one-process torchrun run over
nccl; GPT-2 small's shape (12 x 768, block 1024) for MFU; and sampling 1000 tokens. Each figure
is a whole process a user would start, plus the tokens/s and MFU it printed.

    python benchmarks/bench_gpu.py [--nanogpt PATH/TO/nanoGPT] [--iters 300] [--work DIR]
        [--out results.json] [--parts decode,cache,precisions,torchrun,nanogpt,gpt2,sample]

decode: ms per token in one process, with and without cuDNN's attention; cache: the KV-cache
property tests' models on the GPU; sample: whole-process sampling beside nanoGPT's sample.py,
then where a sample's time goes (torch.profiler's table goes to the .log beside --out).

Without a GPU it stops at once (--device cpu runs the script itself, for trying it out).
nanoGPT runs unmodified (its per-iteration times are read from what it prints); both tools
read the same token files (bench_nanogpt.prepare). The sample part's nanoGPT training needs
--iters above its warmup_iters (100).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_nanogpt import prepare

REPO = Path(__file__).resolve().parents[1]
BABY = REPO / "configs/shakespeare-char.yaml"
GPT2_SHAPE = ["model.n_layer=12", "model.n_head=12", "model.n_embd=768", "model.block_size=1024",
              "model.bias=true", "model.dropout=0.0", "train.batch_size=16",
              "train.eval_interval=100000", "train.final_eval=false"]  # fmt: skip


def run(command: list[str], log, cwd: Path = REPO) -> tuple[float, str, int]:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=150)
        text, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        text = f"{e.stdout or b''!r}{e.stderr or b''!r}\n(timed out after 150 s)"
        code = -1
    seconds = time.perf_counter() - start
    log.write(f"\n$ {' '.join(command)}\n{text}\n-> exit {code}, {seconds:.1f} s\n")
    log.flush()
    return seconds, text, code


def summary_row(text: str, name: str) -> str | None:
    found = re.search(rf"│ {re.escape(name)}\s+│ ([^│]+?)\s+│", text)
    return found.group(1) if found else None


def train(data: Path, out: Path, sets: list[str], log, launcher: list[str] | None = None) -> dict:
    command = [*(launcher or [sys.executable, "-m", "gptcli"]), "train", "--config", str(BABY),
               "--out", str(out), "--force", "--device", DEVICE,
               "--set", f"data.dir={data}"]  # fmt: skip
    command += [arg for s in sets for arg in ("--set", s)]
    seconds, text, code = run(command, log)
    return {"sets": sets, "exit": code, "seconds": round(seconds, 2),
            "tokens_per_s": summary_row(text, "tokens/s"), "mfu": summary_row(text, "MFU"),
            "final_val": summary_row(text, "final val loss"),
            "full_val": summary_row(text, "full val split")}  # fmt: skip


def nanogpt(nano: Path, data: Path, out: Path, iters: int, compile_: bool, log, extra=()) -> dict:
    command = [sys.executable, "train.py", "config/train_shakespeare_char.py", f"--dataset={data}",
               f"--out_dir={out}", f"--max_iters={iters}", f"--lr_decay_iters={iters}",
               f"--compile={compile_}", "--dtype=bfloat16", "--log_interval=10",
               f"--device={DEVICE}", *extra]  # fmt: skip
    seconds, text, code = run(command, log, cwd=nano)
    times = [float(t) for t in re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms", text)]
    steady = times[len(times) // 2 :]  # past warm-up and compilation
    return {"compile": compile_, "exit": code, "seconds": round(seconds, 2),
            "ms_per_iter_median": statistics.median(steady) if steady else None}  # fmt: skip


def cached_equals_full_on_cuda() -> dict:
    """The KV-cache property tests' models (tests/test_generate.py), on the GPU in fp32."""
    sys.path.insert(0, str(REPO))
    from gptcli.generate import generate
    from tests.test_generate import BLOCKS, VARIANTS, variant

    worst, unequal_greedy, checked = 0.0, [], 0
    for (position, norm), block in ((v, b) for v in VARIANTS for b in BLOCKS):
        model = variant(position, norm, block=block).cuda()
        idx = torch.randint(30, (2, 12), generator=torch.Generator().manual_seed(3)).cuda()
        with torch.no_grad():
            full, _ = model(idx)
            cache = model.new_cache(2, 12)
            parts = [model(idx[:, :5], cache=cache)[0]]
            parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(5, 12)]
        worst = max(worst, (torch.cat(parts, dim=1) - full).abs().max().item())
        cached = torch.stack(list(generate(model, idx[:, :4], 40, temperature=0.0)), dim=1)
        plain = torch.stack(
            list(generate(model, idx[:, :4], 40, temperature=0.0, use_cache=False)), dim=1
        )
        if not torch.equal(cached, plain):
            unequal_greedy.append(f"{position}-{norm}-{block}")
        checked += 1
    return {"variants": checked, "max_abs_logit_diff": worst, "greedy_unequal": unequal_greedy}


def sample_breakdown(run_dir: Path, tokens: int, log) -> dict:
    """Where a sample's time goes on the GPU, in this process: loading, then ms per token with
    fp32 and bf16 weights (LoadedModel.generate: the window slides, text is decoded), and
    torch.profiler's busiest operators over 50 tokens (into the log)."""
    import gptcli

    out = {}
    for precision in ("fp32", "bf16"):
        start = time.perf_counter()
        m = gptcli.load(run_dir, device=DEVICE, precision=precision)
        torch.cuda.synchronize() if DEVICE == "cuda" else None
        out[f"load_{precision}_s"] = round(time.perf_counter() - start, 3)
        "".join(m.generate("ROMEO:", max_new_tokens=50, seed=1))  # warm-up
        start = time.perf_counter()
        "".join(m.generate("ROMEO:", max_new_tokens=tokens, seed=1))
        out[f"ms_per_token_{precision}"] = round((time.perf_counter() - start) / tokens * 1e3, 3)
    with torch.profiler.profile() as prof:
        "".join(m.generate("ROMEO:", max_new_tokens=50, seed=1))
    log.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    return out


def sample_part(nano: Path | None, data: Path, work: Path, iters: int, log) -> dict:
    """Whole processes, alternated: gptcli sample and nanoGPT's sample.py, 1000 tokens each from
    a checkpoint of the baby GPT (block 256: the window slides), plus CUDA's start-up alone."""
    out = {}
    ours = work / "bf16"
    if not (ours / "checkpoints.json").exists():
        sets = [
            f"train.max_iters={iters}",
            f"train.lr_decay_iters={iters}",
            f"train.eval_interval={iters}",
            "train.eval_iters=20",
            "train.precision=bf16",
        ]
        out["train"] = train(data, ours, sets, log)
    cuda_init = [sys.executable, "-c", "import torch; torch.zeros(1, device='" + DEVICE + "')"]
    out["import_torch_and_cuda_init_s"] = round(run(cuda_init, log)[0], 2)
    sample = [sys.executable, "-m", "gptcli", "sample", "--checkpoint", str(ours),
              "--device", DEVICE, "--prompt", "ROMEO:", "--max-new-tokens", "1000"]  # fmt: skip
    nano_out = work / "nanogpt_bf16"
    if nano and not (nano_out / "ckpt.pt").exists():
        extra = [f"--eval_interval={iters}", "--eval_iters=20", "--always_save_checkpoint=True"]
        out["nanogpt_train"] = nanogpt(nano, data, nano_out, iters, False, log, extra)
    nano_sample = [sys.executable, "sample.py", f"--out_dir={nano_out}", "--start=ROMEO:",
                   "--num_samples=1", "--max_new_tokens=1000", "--compile=False",
                   f"--device={DEVICE}"]  # fmt: skip
    for round_ in range(2):
        seconds, _, code = run(sample, log)
        out[f"gptcli_sample_1000_s_{round_}"] = round(seconds, 2) if code == 0 else f"exit {code}"
        if nano:
            seconds, _, code = run(nano_sample, log, cwd=nano)
            out[f"nanogpt_sample_1000_s_{round_}"] = round(seconds, 2) if code == 0 else code
    out.update(sample_breakdown(ours, 500, log))
    return out


def decode_part(tokens: int = 600) -> dict:
    """ms per token in one process, random weights of the baby GPT's shape (block 256: the window
    slides twice): fp32, bf16 as gptcli samples (no cuDNN attention), and bf16 with cuDNN's
    attention allowed, as before decode_attention."""
    import contextlib

    from gptcli import generate as gen
    from gptcli.config import ModelConfig
    from gptcli.device import autocast
    from gptcli.model import GPT
    from gptcli.model.inference import decode_attention, for_inference

    device = torch.device(DEVICE)
    cfg = ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, bias=False)
    torch.manual_seed(0)
    fp32 = GPT(cfg, 65).to(device).eval()
    bf16 = GPT(cfg, 65).to(device).eval()
    for_inference(bf16, torch.bfloat16)
    idx = torch.zeros(1, 1, dtype=torch.long, device=device)

    def ms(model, precision):
        ctx = lambda: autocast(device, precision)  # noqa: E731
        list(gen.generate(model, idx, 20, temperature=0.8, autocast_ctx=ctx))
        start = time.perf_counter()
        list(gen.generate(model, idx, tokens, temperature=0.8, autocast_ctx=ctx))
        return round((time.perf_counter() - start) / tokens * 1e3, 3)

    out = {"fp32_ms": ms(fp32, "fp32"), "bf16_ms": ms(bf16, "bf16")}
    gen.decode_attention = lambda device: contextlib.nullcontext()
    try:
        out["bf16_cudnn_allowed_ms"] = ms(bf16, "bf16")
    finally:
        gen.decode_attention = decode_attention
    return out


DEVICE = "cuda"  # --device cpu tries the script out on a machine without a GPU
PARTS = "decode,cache,precisions,torchrun,nanogpt,gpt2,sample"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nanogpt", type=Path)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_gpu"))
    ap.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    ap.add_argument("--parts", default=PARTS, help=f"some of {PARTS}")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    parts = set(args.parts.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = REPO / "gptcli/data/tinyshakespeare.txt.gz"
    data = prepare(corpus, args.work)
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE
    results = {"gpu": gpu, "torch": torch.__version__, "iters": args.iters}
    steps = [f"train.max_iters={args.iters}", f"train.lr_decay_iters={args.iters}"]
    log = open(args.out.with_suffix(".log"), "w")  # noqa: SIM115 (open until the end)

    def save():
        args.out.write_text(json.dumps(results, indent=1))

    if "decode" in parts:
        results["decode"] = decode_part()
        save()
    if "cache" in parts:
        results["cached_equals_full"] = cached_equals_full_on_cuda()
        save()
    variants = [("fp32", ["train.precision=fp32"]), ("bf16", ["train.precision=bf16"]),
                ("fp16", ["train.precision=fp16"]),
                ("bf16_compile", ["train.precision=bf16", "train.compile=true"])]  # fmt: skip
    for name, sets in variants if "precisions" in parts else []:
        results[f"gptcli_{name}"] = train(data, args.work / name, [*steps, *sets], log)
        save()
    if "torchrun" in parts:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=1", "-m", "gptcli"]  # fmt: skip
        results["gptcli_torchrun_nccl"] = train(data, args.work / "ddp", steps, log, torchrun)
        save()
    for compile_ in (False, True) if args.nanogpt and "nanogpt" in parts else []:
        key = f"nanogpt_bf16{'_compile' if compile_ else ''}"
        results[key] = nanogpt(args.nanogpt, data, args.work / key, args.iters, compile_, log)
        save()
    if "gpt2" in parts:
        results["gptcli_gpt2_shape_bf16_compile"] = train(
            data, args.work / "gpt2", ["train.max_iters=60", "train.compile=true", *GPT2_SHAPE], log
        )
        save()
    if "sample" in parts:
        results["sample"] = sample_part(args.nanogpt, data, args.work, args.iters, log)
        save()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
