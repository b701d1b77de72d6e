"""Time gptcli.bpe.train_bpe and report the compression its ranks give under tiktoken.

    python benchmarks/bench_bpe.py                                  # vocab 4096 on tinyshakespeare
    python benchmarks/bench_bpe.py --vocab-size 8192 --bytes 10000000 \\
        --input ../shared/data/en_war_and_peace.txt ../shared/data/tinyshakespeare.txt \\
        ../shared/data/zh_classical_poetry.txt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tiktoken

from gptcli.data.bpe import GPT2_SPLIT_PATTERN, train_bpe

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def load_text(paths: list[Path], n_bytes: int | None) -> str:
    data = b"".join(path.read_bytes() for path in paths)
    if n_bytes is not None:
        # Repeat a short input rather than silently benchmarking less than was asked for.
        data = (data * (n_bytes // len(data) + 1))[:n_bytes]
    # A byte cut can land inside a UTF-8 character; drop just that fragment.
    return data.decode("utf-8", errors="ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, nargs="+", default=[DEFAULT_INPUT])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--bytes", type=int, default=None, help="use the first N bytes")
    args = parser.parse_args()

    text = load_text(args.input, args.bytes)
    n_bytes = len(text.encode("utf-8"))
    start = time.perf_counter()
    ranks = train_bpe(text, args.vocab_size)
    seconds = time.perf_counter() - start

    enc = tiktoken.Encoding(
        name="bench",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": len(ranks)},
    )
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text
    print(f"input: {n_bytes:,} bytes from {', '.join(p.name for p in args.input)}")
    print(f"vocab: {len(ranks)} ranks (asked {args.vocab_size})")
    print(f"train: {seconds:.2f} s")
    print(f"compression: {n_bytes / len(ids):.3f} bytes/token ({len(ids):,} tokens)")


if __name__ == "__main__":
    main()
