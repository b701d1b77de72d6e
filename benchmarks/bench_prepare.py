"""Whole-process speed and peak memory of `gptcli prepare` against tiktoken's own batch encoder.

    python benchmarks/bench_prepare.py                  # gpt2 on 46 MB of English + code
    python benchmarks/bench_prepare.py --corpus shakespeare --mb 100
    python benchmarks/bench_prepare.py --bpe            # also bpe 4096 on tinyshakespeare and
                                                        # 8192 on 10 MB (as bench_bpe.py's)
    python benchmarks/bench_prepare.py --mb 20 --rounds 1   # a quick look

Corpora: "mixed" is War and Peace repeated, then the Python sources of this virtualenv's
site-packages (in sorted order), half and half; "shakespeare" is tiny-shakespeare repeated with
its lines shuffled differently in every copy. Each round times (a) tiktoken's
encode_ordinary_batch with --threads threads over the text, already in memory and cut in ~1 MB
pieces at line ends, warmed by one untimed pass (a process' first pass can run 1.4x slower), and
(b) the `gptcli prepare` command with --workers, as a whole process:
from starting the interpreter to its exit, reading the file from disk and writing the finished
dataset. Its peak RSS (VmHWM) is read from /proc while it runs (Linux). Rounds alternate (a) and
(b) so that both see the same machine load; the ratio is of their speeds, (b) over (a).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"

# For the bpe cases: prepare() in a fresh interpreter, to report its stages' seconds.
CHILD = """
import json, sys, time
from pathlib import Path
from gptcli.data.prepare import prepare

kwargs = json.loads(sys.argv[1])
start = time.perf_counter()
result = prepare(input_path=Path(kwargs.pop("input")), out_dir=Path(kwargs.pop("out")),
                 force=True, **kwargs)
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "stages": result.seconds,
    "tokens": result.train_tokens + result.val_tokens,
}))
"""


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process: its peak resident memory so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def timed_process(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of a command, from its start to its exit.

    Polls VmHWM rather than reading ru_maxrss, which also counts the memory that the child
    shared with this process until its exec."""
    begin = time.perf_counter()
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mb(proc.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - begin
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{err}")
    return seconds, peak, out


def gptcli_command() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "gptcli"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gptcli"]


def make_shakespeare(path: Path, n_bytes: int, seed: int = 0) -> None:
    lines = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < n_bytes:
            rng.shuffle(lines)
            copy = "".join(lines)
            f.write(copy)
            written += len(copy.encode("utf-8"))


def make_mixed(path: Path, n_bytes: int) -> None:
    """War and Peace repeated to half of n_bytes, then Python sources to the rest."""
    english = (DATA / "en_war_and_peace.txt").read_bytes()
    sources = sorted(Path(sysconfig.get_path("purelib")).rglob("*.py"))
    written = 0
    with open(path, "wb") as f:
        while written < n_bytes // 2:
            written += f.write(english)
        for source in sources:
            if written >= n_bytes:
                break
            try:
                code = source.read_bytes()
                code.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            written += f.write(code.replace(b"\0", b"") + b"\n")


def tiktoken_batch(text: str, threads: int) -> tuple[float, int]:
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    # ~1 MB pieces ending at a line end that follows text (not inside a run of blank lines, which
    # GPT-2's pattern keeps in one chunk), so that their tokens are those of the whole text.
    pieces, start = [], 0
    while start < len(text):
        match = re.compile(r"\S\n").search(text, start + 1_000_000)
        end = match.end() - 1 if match else len(text)
        pieces.append(text[start:end])
        start = end
    n_tokens = 0
    begin = time.perf_counter()
    # A few batches rather than one, so that the token lists of 100 MB never sit in memory.
    group = 8 * threads
    for i in range(0, len(pieces), group):
        batch = enc.encode_ordinary_batch(pieces[i : i + group], num_threads=threads)
        n_tokens += sum(len(ids) for ids in batch)
    return time.perf_counter() - begin, n_tokens


def bench_gpt2(tmp: Path, corpus_kind: str, mb: int, workers: int, threads: int, rounds: int):
    corpus = tmp / f"{corpus_kind}.txt"
    (make_mixed if corpus_kind == "mixed" else make_shakespeare)(corpus, mb * 1_000_000)
    size = corpus.stat().st_size
    text = corpus.read_text(encoding="utf-8")
    print(f"corpus: {size / 1e6:.1f} MB ({corpus_kind}); {os.cpu_count()} CPUs")
    # tiktoken at its best: warmed by a pass, and this thread the first to encode (when a pool
    # thread is, the others run slower: its regex copies share state with the first user).
    import tiktoken

    tiktoken.get_encoding("gpt2").encode_ordinary("warm up")
    tiktoken_batch(text, threads)
    out = tmp / "gpt2"
    options = {"--input": corpus, "--tokenizer": "gpt2", "--workers": workers, "--out": out}
    command = gptcli_command() + ["prepare", "--force"]
    command += [str(part) for option in options.items() for part in option]
    ratios = []
    for r in range(rounds):
        base_s, base_tokens = tiktoken_batch(text, threads)
        seconds, peak, _ = timed_process(command)
        tokens = json.loads((out / "meta.json").read_text())["tokens"]
        assert tokens["train"] + tokens["val"] == base_tokens, (tokens, base_tokens)
        ratios.append(base_s / seconds)
        print(
            f"round {r + 1}: tiktoken encode_ordinary_batch ({threads} threads, in memory) "
            f"{base_s:.2f} s | gptcli prepare --workers {workers} (whole process) {seconds:.2f} s"
            f" | ratio {base_s / seconds:.2f} | peak RSS {peak:.0f} MB"
        )
    print(f"ratio: median {statistics.median(ratios):.2f}, best {max(ratios):.2f} (target >= 0.9)")


def bench_bpe(tmp: Path, workers: int) -> None:
    ten = tmp / "mixed10mb.txt"
    names = ["en_war_and_peace.txt", "tinyshakespeare.txt", "zh_classical_poetry.txt"]
    data = b"".join((DATA / name).read_bytes() for name in names)[:10_000_000]
    ten.write_text(data.decode("utf-8", errors="ignore"), encoding="utf-8")
    for path, vocab in [(DATA / "tinyshakespeare.txt", 4096), (ten, 8192)]:
        kwargs = {"input": str(path), "out": str(tmp / "bpe"), "tokenizer": "bpe",
                  "vocab_size": vocab, "workers": workers}  # fmt: skip
        seconds, peak, out = timed_process([sys.executable, "-c", CHILD, json.dumps(kwargs)])
        run = json.loads(out.strip().splitlines()[-1])
        stages = run["stages"]
        print(
            f"bpe {vocab} on {path.name} ({path.stat().st_size / 1e6:.1f} MB): training "
            f"{stages['tokenizer']:.1f} s, encoding {stages['encode']:.1f} s, whole process "
            f"{seconds:.1f} s; {run['tokens']:,} tokens; peak RSS {peak:.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["mixed", "shakespeare"], default="mixed")
    parser.add_argument("--mb", type=int, default=46, help="corpus size in MB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="tiktoken's num_threads")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bpe", action="store_true", help="also time bpe training + encoding")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_gpt2(Path(tmp), args.corpus, args.mb, args.workers, args.threads, args.rounds)
        if args.bpe:
            bench_bpe(Path(tmp), args.workers)


if __name__ == "__main__":
    main()
