"""Parquet prepare in bounded memory: a ~100 MB Parquet file of documents against the same
documents as JSON Lines, each tokenized by a whole `gptcli prepare` process.

    python benchmarks/bench_parquet.py [--mb 100] [--rounds 2] [--tokenizer char|gpt2]

The documents are paragraphs of the shared corpora (War and Peace, tiny-shakespeare, classical
Chinese poetry), repeated to the size asked, written by pyarrow (snappy) in row groups of 10,000
rows. Prints wall time and peak resident memory of each process, and checks that both give the
same tokens.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_prepare import DATA, gptcli_command, timed_process

ROW_GROUP = 10_000


def documents(n_bytes: int) -> list[str]:
    names = ["en_war_and_peace.txt", "tinyshakespeare.txt", "zh_classical_poetry.txt"]
    texts = [(DATA / name).read_text(encoding="utf-8") for name in names]
    paragraphs = [p for text in texts for p in text.split("\n\n") if p.strip()]
    docs, size, i = [], 0, 0
    while size < n_bytes:
        doc = paragraphs[i % len(paragraphs)]
        docs.append(doc)
        size += len(doc.encode("utf-8"))
        i += 1
    return docs


def tokens(out: Path) -> np.ndarray:
    meta = json.loads((out / "meta.json").read_text())
    splits = [np.fromfile(out / f"{s}.bin", dtype=meta["dtype"]) for s in ("train", "val")]
    return np.concatenate(splits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokenizer", default="char")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = documents(args.mb * 1_000_000)
        parquet, jsonl = tmp / "docs.parquet", tmp / "docs.jsonl"
        pq.write_table(pa.table({"text": docs}), parquet, row_group_size=ROW_GROUP)
        with open(jsonl, "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
        text_mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
        sizes = {p.suffix: p.stat().st_size / 1e6 for p in (parquet, jsonl)}
        print(f"{len(docs):,} documents, {text_mb:.0f} MB of text; Parquet file "
              f"{sizes['.parquet']:.0f} MB, JSON Lines {sizes['.jsonl']:.0f} MB")
        del docs
        outs = {}
        for r in range(args.rounds):
            for src in (parquet, jsonl):
                out = tmp / f"out-{src.suffix[1:]}"
                command = [*gptcli_command(), "prepare", "--input", str(src), "--workers", "2",
                           "--tokenizer", args.tokenizer, "--out", str(out), "--force"]
                seconds, peak, _ = timed_process(command)
                outs[src.suffix] = out
                print(f"round {r + 1}: {src.name}: {seconds:.1f} s, peak RSS {peak:.0f} MB")
        same = np.array_equal(tokens(outs[".parquet"]), tokens(outs[".jsonl"]))
        print(f"same tokens from both: {same}")


if __name__ == "__main__":
    main()
