"""Corpus -> data/<name>/{train.bin, val.bin, meta.json}, streaming in bounded memory.

The corpus' documents (corpora.py) are read in pieces (pieces.py); worker threads encode the
pieces, a few at a time, and their tokens go straight to one file in order. The validation split
is the tail of that stream, moved out at the end. The dataset directory is written beside its
final place and renamed into it at the end, so an interrupted or failed prepare never leaves a
half-written dataset (nor destroys an old one).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gptcli import atomic
from gptcli.cores import my_cpus
from gptcli.data.corpora import dataset_file, documents, is_json_lines, source_files
from gptcli.data.parquet import is_parquet, require_pyarrow
from gptcli.data.pieces import CHUNK_BYTES, pieces, segments
from gptcli.data.tokenizers import TOKENIZERS, Tokenizer
from gptcli.errors import GptcliError
from gptcli.version import __version__


@dataclass
class PrepareResult:
    out_dir: Path
    vocab_size: int
    train_tokens: int
    val_tokens: int
    source_bytes: int  # of text, decompressed
    # Wall-clock seconds of each stage: "tokenizer" (learning the vocabulary) and "encode".
    seconds: dict[str, float] = field(default_factory=dict)


class _Done:
    """A result at hand, with a Future's result()."""

    def __init__(self, value: np.ndarray):
        self.value = value

    def result(self) -> np.ndarray:
        return self.value


def _encode_piece(tok: Tokenizer, dtype: np.dtype, piece: list[str]) -> np.ndarray:
    """The tokens of a piece: its segments' tokens joined by the separator (see pieces.pieces)."""
    if len(piece) == 1 or tok.separator_id is None:
        return tok.encode_array("".join(piece)).astype(dtype, copy=False)
    separator = np.array([tok.separator_id], dtype)
    parts = []
    for text in piece:
        parts += [separator, tok.encode_array(text).astype(dtype, copy=False)]
    return np.concatenate(parts[1:])


@contextlib.contextmanager
def _encoder(tok: Tokenizer, dtype: np.dtype, workers: int):
    """submit(piece) -> an object whose result() is the piece's tokens: from a pool of threads,
    or computed at once for workers=1."""
    if workers == 1:
        encode = functools.partial(_encode_piece, tok, dtype)
        yield lambda piece: _Done(encode(piece))
        return
    # Threads, not processes: tiktoken encodes with the GIL released, so threads run in parallel
    # as its own encode_batch does, and they need no start-up (an interpreter, imports and the
    # tokenizer's files per process: ~0.5 s) nor a copy of every piece sent and returned.
    local = threading.local()
    spare = [tok]  # the first thread takes tok itself (this thread no longer encodes with it)

    def encode_here(piece: list[str]) -> np.ndarray:
        if not hasattr(local, "encode"):
            try:
                own = spare.pop()
            except IndexError:
                own = tok.for_thread()
            local.encode = functools.partial(_encode_piece, own, dtype)
        return local.encode(piece)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="gptcli-encode")
    try:
        yield lambda piece: pool.submit(encode_here, piece)
    finally:
        # After an error, pieces still queued are dropped rather than encoded.
        pool.shutdown(wait=True, cancel_futures=True)


def _encoded(
    tok: Tokenizer,
    files: list[Path],
    dtype: np.dtype,
    workers: int,
    chunk_bytes: int,
    text_field: str,
    sources: list[dict[str, Any]],
    on_bytes: Callable[[int], None],
) -> Iterator[np.ndarray]:
    """The corpus' tokens in order, a piece at a time, documents separated by the tokenizer's
    separator; appends each file's size and sha256 to sources."""
    # Submitting only while few pieces are in flight (Pool.imap would read the whole corpus
    # ahead) is what bounds memory; two per worker keep every worker busy.
    in_flight = 2 * workers
    docs = documents(files, chunk_bytes, on_bytes, sources, text_field)
    with _encoder(tok, dtype, workers) as submit, contextlib.closing(docs):
        pending: deque = deque()
        for piece in pieces(docs, chunk_bytes):
            pending.append(submit(piece))
            while len(pending) > in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# Each thread holds its own tiktoken encoder (~10 MB) and two pieces (1 MB each) in flight;
# past this many, a big machine would spend memory for little more speed.
MAX_WORKERS = 16


def default_workers() -> int:
    """The CPUs this process may use, at most MAX_WORKERS."""
    return min(len(my_cpus()), MAX_WORKERS)


_SIZE = re.compile(r"(\d+)\s*([kmg]?)(i?)b?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A byte count: 5000000, 5M or 5MB (10^6), 5MiB (2^20); K and G likewise."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise GptcliError(f"not a size: {text!r}; write e.g. 50000000, 50M or 48MiB")
    digits, prefix, binary = match.groups()
    power = " kmg".index(prefix.lower() or " ")
    return int(digits) * (1024 if binary else 1000) ** power


def prepare(
    *,
    input_path: Path | None = None,
    dataset: str | None = None,
    tokenizer: str = "gpt2",
    out_dir: Path | None = None,
    val_fraction: float = 0.1,
    force: bool = False,
    vocab_size: int | None = None,
    train_bytes: int | None = None,
    block_size: int = 64,
    workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    text_field: str = "text",
    progress: Callable[[str, int, int, str], None] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> PrepareResult:
    """Tokenize a corpus into out_dir/{train.bin, val.bin, meta.json} (see the module docstring).

    vocab_size and train_bytes go to tokenizers that learn from the corpus (bpe). Each split must
    hold more than block_size tokens, so that training can draw one block and its targets.
    workers: encoding threads (default: the CPUs this process may use). progress(stage, done,
    total, unit) reports each stage: "vocabulary" (corpus bytes read to learn the vocabulary),
    "merges" (tokens in a BPE vocabulary) and "encoding" (corpus bytes encoded), in bytes of the
    files on disk. text_field: the field of a JSON Lines record, or the Parquet column, that
    holds each document's text. include, exclude: globs that choose a directory's files.
    """
    if (input_path is None) == (dataset is None):
        raise GptcliError("give exactly one of --input PATH or --dataset NAME")
    _check_numbers(val_fraction, block_size, workers, chunk_bytes)
    options = _tokenizer_options(tokenizer, vocab_size=vocab_size, train_bytes=train_bytes)
    root = Path(input_path) if input_path is not None else dataset_file(dataset)
    out_dir = _output_dir(root, out_dir, dataset, tokenizer, force)
    files, total = _corpus_files(root, text_field, include, exclude)
    report = progress or (lambda stage, done, total, unit: None)

    start = time.perf_counter()
    read = functools.partial(documents, files, chunk_bytes, text_field=text_field)
    tok = _learn_tokenizer(TOKENIZERS[tokenizer], options, read, total, chunk_bytes, report)
    learned = time.perf_counter()
    workers = default_workers() if workers is None else workers
    sources: list[dict[str, Any]] = []
    with atomic.new_dir(out_dir) as tmp:
        encoded = functools.partial(
            _encoded, tok, files, workers=workers, chunk_bytes=chunk_bytes, text_field=text_field
        )
        on_bytes = _counter(report, "encoding", total)
        n_train, n_val = _write_dataset(
            tmp, tok, encoded, sources, val_fraction, block_size, on_bytes
        )
    seconds = {"tokenizer": learned - start, "encode": time.perf_counter() - learned}
    text_bytes = sum(source["bytes"] for source in sources)
    return PrepareResult(out_dir, tok.vocab_size, n_train, n_val, text_bytes, seconds)


def _corpus_files(root: Path, text_field: str, include: Sequence[str] = (),
                  exclude: Sequence[str] = ()) -> tuple[list[Path], int]:  # fmt: skip
    """The corpus' files and their bytes on disk, refusing what cannot be read before anything
    is written: no pyarrow for a Parquet file, a --text-field with no file that has fields."""
    files = source_files(root, include, exclude)
    if any(is_parquet(path) for path in files):
        require_pyarrow()
    if text_field != "text" and not any(is_json_lines(p) or is_parquet(p) for p in files):
        raise GptcliError(
            f"--text-field {text_field!r} is for JSON Lines and Parquet, but {root} has no "
            ".jsonl, .ndjson or .parquet file; drop it, or name the files .jsonl"
        )
    total = sum(path.stat().st_size for path in files)
    if total == 0:
        raise GptcliError(f"the corpus at {root} is empty; give it some text")
    return files, total


def _check_numbers(val_fraction: float, block_size: int, workers: int | None, chunk_bytes: int):
    if not 0.0 < val_fraction < 1.0:
        raise GptcliError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if block_size < 1:
        raise GptcliError(f"--block-size must be at least 1, got {block_size}")
    if workers is not None and not 1 <= workers <= 4 * MAX_WORKERS:
        raise GptcliError(f"--workers must be between 1 and {4 * MAX_WORKERS}, got {workers}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")


def _tokenizer_options(tokenizer: str, **given: Any) -> dict[str, Any]:
    """The options given for a tokenizer that learns from the corpus; refuses the ones it lacks."""
    if tokenizer not in TOKENIZERS:
        raise GptcliError(
            f"unknown tokenizer '{tokenizer}'; choose one of: {', '.join(TOKENIZERS.names())}"
        )
    options = {key: value for key, value in given.items() if value is not None}
    unused = [key for key in options if key not in TOKENIZERS[tokenizer].corpus_options]
    if unused:
        flag = "--" + unused[0].replace("_", "-")
        raise GptcliError(f"{flag} does not apply to --tokenizer {tokenizer}")
    return options


def _bare_name(name: str) -> str:
    name = name.removesuffix(".gz")
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def _output_dir(
    root: Path, out_dir: Path | None, dataset: str | None, tokenizer: str, force: bool
) -> Path:
    if out_dir is None:
        # data/c2_char for c2.jsonl.gz, not data/c2.jsonl_char
        stem = dataset or (_bare_name(root.name) if root.is_file() else root.name)
        out_dir = Path("data") / f"{stem}_{tokenizer}"
    out_dir = Path(out_dir)
    inside = (root.resolve(), out_dir.resolve())
    if inside[0] == inside[1] or inside[0] in inside[1].parents or inside[1] in inside[0].parents:
        raise GptcliError(
            f"--out {out_dir} and the input {root} overlap; write the dataset somewhere else"
        )
    atomic.check_replace(
        out_dir, force, label="--out", what="a dataset prepare wrote", why_not_ours=_not_a_dataset
    )
    return out_dir


def _not_a_dataset(path: Path) -> str | None:
    """None for a dataset prepare wrote, recognised by its meta.json (which TokenDataset reads);
    else why --force may not replace path. A meta.json is a common name, so its keys count too."""
    meta = path / "meta.json"
    if not meta.is_file():
        return "no meta.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its meta.json is not JSON"
    if not isinstance(data, dict) or not {"tokenizer", "vocab_size", "tokens"} <= data.keys():
        return "its meta.json is not one prepare writes"
    return None


def _learn_tokenizer(cls, options, read, total, chunk_bytes, report) -> Tokenizer:
    def merges(done: int, n: int) -> None:
        report("merges", done, n, "token")

    docs = read(on_bytes=_counter(report, "vocabulary", total))
    # closing(): a tokenizer that reads only part of the corpus leaves a file open.
    with contextlib.closing(docs):
        return cls.from_corpus(segments(docs, chunk_bytes), progress=merges, **options)


def _write_dataset(
    out: Path,
    tok: Tokenizer,
    encoded: Callable[..., Iterator[np.ndarray]],
    sources: list[dict[str, Any]],
    val_fraction: float,
    block_size: int,
    on_bytes: Callable[[int], None],
) -> tuple[int, int]:
    """train.bin, val.bin, meta.json and the tokenizer's files into out; (train, val) tokens."""
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 2**16 else np.uint32)
    with open(out / "tokens.bin", "wb") as f:
        for data in encoded(dtype=dtype, sources=sources, on_bytes=on_bytes):
            f.write(data)
        n_tokens = f.tell() // dtype.itemsize
    # The train split is rounded down, as nanoGPT's int(n * 0.9): on tiny-shakespeare both keep
    # 1,003,854 characters for training, so the two val splits are the same text.
    n_train = int(n_tokens * (1.0 - val_fraction))
    n_val = n_tokens - n_train
    if min(n_train, n_val) <= block_size:
        raise GptcliError(
            f"the corpus is too small: {n_tokens} tokens give {n_train} train and {n_val} "
            f"val tokens at --val-fraction {val_fraction}; each split needs more than "
            f"--block-size {block_size} (one training block and its targets)"
        )
    _split_tail(out / "tokens.bin", out / "train.bin", out / "val.bin", n_train * dtype.itemsize)
    meta = {
        "gptcli_version": __version__,
        "tokenizer": tok.spec(),
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "tokens": {"train": n_train, "val": n_val},
        "val_fraction": val_fraction,
        "sources": sources,
    }
    atomic.write_json(out / "meta.json", meta)
    for name, text in tok.extra_files().items():
        (out / name).write_text(text, encoding="utf-8")
    return n_train, n_val


def _counter(report: Callable[[str, int, int, str], None], stage: str, total: int):
    """on_bytes for corpora.documents: reports the running count of bytes read in stage."""
    done = 0

    def add(n: int) -> None:
        nonlocal done
        done += n
        report(stage, done, total, "B")

    return add


def _split_tail(tokens: Path, train: Path, val: Path, train_bytes: int) -> None:
    """Move the bytes of tokens past train_bytes into val, the rest becoming train: a copy of
    the (small) tail and a truncation, never the whole stream in memory."""
    with open(tokens, "r+b") as src, open(val, "wb") as dst:
        src.seek(train_bytes)
        shutil.copyfileobj(src, dst, 16 << 20)
        src.truncate(train_bytes)
    os.replace(tokens, train)
