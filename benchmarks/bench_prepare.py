"""Throughput and peak memory of `gptcli prepare` against tiktoken's own batch encoder.

    python benchmarks/bench_prepare.py                 # gpt2 on a 100 MB corpus, --workers 2
    python benchmarks/bench_prepare.py --bpe           # also bpe 4096 on tinyshakespeare and
                                                       # 8192 on 10 MB (as bench_bpe.py's)
    python benchmarks/bench_prepare.py --mb 20 --rounds 1   # a quick look

The corpus is tiny-shakespeare repeated with its lines shuffled differently in every copy. Each
round times (a) tiktoken's encode_ordinary_batch with --threads threads over the text, already in
memory and cut in ~1 MB pieces at line ends, and (b) gptcli.prepare with --workers processes from
the file on disk to the finished dataset, in a fresh interpreter whose peak RSS (VmHWM) and its
workers' are read from /proc (Linux). Rounds alternate (a) and (b) so that both see the same
machine load.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"

# Runs in a fresh interpreter so that its peak RSS is prepare's alone. VmHWM rather than
# ru_maxrss, which also counts the memory that a child shares with its parent until exec.
CHILD = """
import json, sys, time
from pathlib import Path
from gptcli.data.prepare import prepare

kwargs = json.loads(sys.argv[1])
start = time.perf_counter()
result = prepare(input_path=Path(kwargs.pop("input")), out_dir=Path(kwargs.pop("out")),
                 force=True, **kwargs)
seconds = time.perf_counter() - start
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
print(json.dumps({
    "seconds": seconds,
    "stages": result.seconds,
    "tokens": result.train_tokens + result.val_tokens,
    "rss_main_mb": peak,
}))
"""


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process: its peak resident memory so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def workers_of(pid: int) -> list[int]:
    """The spawned worker processes of pid (after their exec, so that their memory is theirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def make_corpus(path: Path, n_bytes: int, seed: int = 0) -> None:
    lines = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < n_bytes:
            rng.shuffle(lines)
            copy = "".join(lines)
            f.write(copy)
            written += len(copy.encode("utf-8"))


def run_prepare(**kwargs) -> dict:
    """prepare(**kwargs) in a fresh interpreter; polls its workers' peak RSS while it runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(kwargs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    worker_peak = 0.0
    while proc.poll() is None:
        for pid in workers_of(proc.pid):
            worker_peak = max(worker_peak, peak_rss_mb(pid))
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"prepare failed:\n{err}")
    return {**json.loads(out.strip().splitlines()[-1]), "rss_workers_mb": worker_peak}


def workers_text(run: dict) -> str:
    peak = run["rss_workers_mb"]
    return f"largest worker {peak:.0f} MB" if peak else "no workers (a small corpus encodes here)"


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


def bench_gpt2(tmp: Path, mb: int, workers: int, threads: int, rounds: int) -> None:
    corpus = tmp / "corpus.txt"
    make_corpus(corpus, mb * 1_000_000)
    size = corpus.stat().st_size
    text = corpus.read_text(encoding="utf-8")
    print(f"corpus: {size / 1e6:.1f} MB (tinyshakespeare, lines shuffled per copy)")
    ratios = []
    for r in range(rounds):
        base_s, base_tokens = tiktoken_batch(text, threads)
        run = run_prepare(
            input=str(corpus), out=str(tmp / "gpt2"), tokenizer="gpt2", workers=workers
        )
        assert run["tokens"] == base_tokens, (run["tokens"], base_tokens)
        base_rate, rate = size / 1e6 / base_s, size / 1e6 / run["seconds"]
        ratios.append(rate / base_rate)
        print(
            f"round {r + 1}: tiktoken encode_ordinary_batch ({threads} threads) "
            f"{base_rate:.2f} MB/s | gptcli prepare (--workers {workers}) {rate:.2f} MB/s "
            f"[{run['seconds']:.1f} s] | ratio {rate / base_rate:.2f} | peak RSS main "
            f"{run['rss_main_mb']:.0f} MB, {workers_text(run)}"
        )
    print(f"ratio: median {statistics.median(ratios):.2f}, best {max(ratios):.2f} (target >= 0.8)")


def bench_bpe(tmp: Path, workers: int) -> None:
    ten = tmp / "mixed10mb.txt"
    names = ["en_war_and_peace.txt", "tinyshakespeare.txt", "zh_classical_poetry.txt"]
    data = b"".join((DATA / name).read_bytes() for name in names)[:10_000_000]
    ten.write_text(data.decode("utf-8", errors="ignore"), encoding="utf-8")
    cases = [(DATA / "tinyshakespeare.txt", 4096), (ten, 8192)]
    for path, vocab in cases:
        run = run_prepare(
            input=str(path),
            out=str(tmp / "bpe"),
            tokenizer="bpe",
            vocab_size=vocab,
            workers=workers,
        )
        stages = run["stages"]
        print(
            f"bpe {vocab} on {path.name} ({path.stat().st_size / 1e6:.1f} MB): training "
            f"{stages['tokenizer']:.1f} s, encoding {stages['encode']:.1f} s, total "
            f"{run['seconds']:.1f} s; {run['tokens']:,} tokens; peak RSS main "
            f"{run['rss_main_mb']:.0f} MB, {workers_text(run)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="corpus size in MB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="tiktoken's num_threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bpe", action="store_true", help="also time bpe training + encoding")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_gpt2(Path(tmp), args.mb, args.workers, args.threads, args.rounds)
        if args.bpe:
            bench_bpe(Path(tmp), args.workers)


if __name__ == "__main__":
    main()
