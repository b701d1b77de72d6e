"""Corpus -> data/<name>/{train.bin, val.bin, meta.json}, streaming in bounded memory.

Each file is read in pieces of about a megabyte, cut only where GPT-2's split pattern cuts anyway
(so the tokens are those of the whole text); worker processes encode the pieces, a few at a time,
and their tokens go straight to one file in order. The validation split is the tail of that
stream, moved out at the end. The dataset directory is written beside its final place and renamed
into it at the end, so an interrupted or failed prepare never leaves a half-written dataset (nor
destroys an old one).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import multiprocessing
import os
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import regex

import gptcli
from gptcli import atomic
from gptcli.errors import GptcliError
from gptcli.tokenizers import TOKENIZERS, Tokenizer, tokenizer_from_spec

DATASETS = {
    "shakespeare": {
        "url": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "filename": "tinyshakespeare.txt",
    },
}


@dataclass
class PrepareResult:
    out_dir: Path
    vocab_size: int
    train_tokens: int
    val_tokens: int
    source_bytes: int
    # Wall-clock seconds of each stage: "tokenizer" (learning the vocabulary) and "encode".
    seconds: dict[str, float] = field(default_factory=dict)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "gptcli"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_dataset(name: str) -> Path:
    """The named corpus from the user's cache, downloaded and checked on first use."""
    if name not in DATASETS:
        raise GptcliError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    info = DATASETS[name]
    path = cache_dir() / info["filename"]
    if path.is_file() and _sha256(path.read_bytes()) == info["sha256"]:
        return path
    try:
        with urllib.request.urlopen(info["url"], timeout=30) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise GptcliError(
            f"could not download dataset '{name}' ({exc}); offline, pass a local copy with "
            f"--input PATH (or place it at {path})"
        ) from None
    if _sha256(data) != info["sha256"]:
        raise GptcliError(f"downloaded dataset '{name}' failed its sha256 check; try again later")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, data)
    return path


def source_files(path: Path) -> list[Path]:
    if not path.exists():
        raise GptcliError(f"input not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise GptcliError(f"input directory {path} holds no files")
    return files


# Pieces are about this many bytes: big enough that passing them to a worker costs ~1% of
# encoding them, small enough that a few per worker in flight take little memory.
CHUNK_BYTES = 1 << 20
# A pool of worker processes takes ~0.5 s to start: less than this many chunks encode faster here.
MIN_POOL_CHUNKS = 8
# A piece with no safe cut grows to at most this many chunks, then is cut anyway (see read_pieces).
MAX_PIECE_CHUNKS = 8

# Where a piece may end so that pre-splitting the pieces gives exactly the chunks (hence tokens)
# of the whole text: just before whitespace that follows non-whitespace. No GPT-2 chunk holds both
# (a word's optional leading space belongs to the next chunk), the pattern looks behind nowhere,
# and its one lookahead, (?!\S), sees whitespace and the end of the text alike. The regex module's
# \s is Unicode's White_Space, as in tiktoken's Rust regex. (?r) searches from the end.
_CUT = regex.compile(r"(?r)(?<=\S)\s")
# For text with no such place, e.g. one long line of Chinese: between two non-whitespace
# characters of different classes (letter, number, other), which only a contraction ('s, 't, ...)
# spans, so never right after an apostrophe.
_CUT_BETWEEN_CLASSES = regex.compile(
    r"(?r)(?<=[\p{L}\p{N}])(?=[^\s\p{L}\p{N}])|(?<=[^\s\p{L}\p{N}'])(?=[\p{L}\p{N}])"
    r"|(?<=\p{L})(?=\p{N})|(?<=\p{N})(?=\p{L})"
)


def find_cut(text: str, start: int = 0) -> int:
    """The last place at or after start where text can be cut without changing its tokens under
    GPT-2's split pattern (also used by --tokenizer bpe; any place suits char), or -1."""
    for pattern in (_CUT, _CUT_BETWEEN_CLASSES):
        # Searching backwards, regex misses an empty match right at pos: start one earlier.
        match = pattern.search(text, max(start - 1, 0))
        if match and match.start() >= max(start, 1):
            return match.start()
    return -1


def _not_utf8(path: Path, offset: int) -> GptcliError:
    return GptcliError(
        f"{path} is not UTF-8 text (bad byte at offset {offset}); convert it to UTF-8"
    )


def read_pieces(
    path: Path,
    chunk_bytes: int = CHUNK_BYTES,
    info: dict[str, Any] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The text of path in pieces of about chunk_bytes (at least one piece, "" for an empty file),
    cut by find_cut. Refuses a binary file as it reads; when all is read, info gets the file's
    path, size and sha256, and on_bytes(n) hears of every n bytes read.

    A stretch of MAX_PIECE_CHUNKS chunks with no safe cut at all (no whitespace, no change between
    letters, digits and punctuation: not natural text) is cut anyway, which can change the tokens
    right at the cut.
    """
    digest = hashlib.sha256()
    decoded = 0  # bytes of the file in text so far
    partial = b""  # the first bytes of a character that the next block completes
    text = ""
    pieces = 0
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
            if b"\0" in block:
                raise GptcliError(f"{path} looks binary (it holds NUL bytes); give text files only")
            data = partial + block
            try:
                new, partial = data.decode("utf-8"), b""
            except UnicodeDecodeError as exc:
                if exc.reason != "unexpected end of data" or exc.end != len(data):
                    raise _not_utf8(path, decoded + exc.start) from None
                new, partial = data[: exc.start].decode("utf-8"), data[exc.start :]
            decoded += len(data) - len(partial)
            if on_bytes is not None:
                on_bytes(len(block))
            searched, text = len(text), text + new
            cut = find_cut(text, searched)
            if cut < 0 and len(text) > MAX_PIECE_CHUNKS * chunk_bytes:
                cut = len(text)
            if cut > 0:
                yield text[:cut]
                text = text[cut:]
                pieces += 1
    if partial:
        raise _not_utf8(path, decoded)
    if text or not pieces:
        yield text
    if info is not None:
        info.update(path=str(path), bytes=decoded, sha256=digest.hexdigest())


def _read_corpus(
    files: list[Path], chunk_bytes: int, on_bytes: Callable[[int], None]
) -> Iterator[str]:
    for path in files:
        yield from read_pieces(path, chunk_bytes, on_bytes=on_bytes)


class _Done:
    """A result at hand, with a Future's result()."""

    def __init__(self, value: bytes):
        self.value = value

    def result(self) -> bytes:
        return self.value


def _encode_piece(tok: Tokenizer, dtype: np.dtype, piece: str) -> bytes:
    return tok.encode_array(piece).astype(dtype, copy=False).tobytes()


_worker_encode: Callable[[str], bytes] | None = None
_worker_error: BaseException | None = None


def _init_worker(spec: dict[str, Any], dtype: str) -> None:
    global _worker_encode, _worker_error
    # Ctrl-C reaches the whole process group: the parent alone handles it, by ending the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _worker_encode = functools.partial(
            _encode_piece, tokenizer_from_spec(spec), np.dtype(dtype)
        )
    except BaseException as exc:
        # Raised here, it would make the pool restart the worker forever; raise it per task.
        _worker_error = exc


def _encode_in_worker(piece: str) -> bytes:
    if _worker_encode is None:
        raise _worker_error or RuntimeError("worker not initialised")
    return _worker_encode(piece)


@contextlib.contextmanager
def _encoder(tok: Tokenizer, dtype: np.dtype, workers: int):
    """submit(piece) -> an object whose result() is the piece's token bytes: from a pool of
    worker processes, or computed at once in this process for workers=1."""
    if workers == 1:
        encode = functools.partial(_encode_piece, tok, dtype)
        yield lambda piece: _Done(encode(piece))
        return
    # spawn rather than fork: the caller may run threads (tqdm's monitor, torch's pools) that a
    # fork would copy in the middle of whatever they hold. Workers rebuild the tokenizer from its
    # spec, as a checkpoint does. concurrent.futures rather than multiprocessing.Pool: when a
    # worker dies (killed, out of memory, cannot start) Pool waits forever; this one raises.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, _init_worker, (tok.spec(), dtype.str))
    try:
        yield lambda piece: pool.submit(_encode_in_worker, piece)
    except BrokenProcessPool:
        raise GptcliError(
            "an encoding worker process died or could not start; a script that calls prepare() "
            "with workers > 1 needs an `if __name__ == '__main__':` guard (or use --workers 1)"
        ) from None
    finally:
        # After an error, pieces still queued are dropped rather than encoded.
        pool.shutdown(wait=True, cancel_futures=True)


def _encoded(
    tok: Tokenizer,
    files: list[Path],
    dtype: np.dtype,
    workers: int,
    chunk_bytes: int,
    sources: list[dict[str, Any]],
    on_bytes: Callable[[int], None],
) -> Iterator[bytes]:
    """The corpus' tokens in order as raw bytes, documents separated by the tokenizer's separator;
    appends each file's size and sha256 to sources."""
    separator = b""
    if tok.separator_id is not None:
        separator = np.array([tok.separator_id], dtype).tobytes()
    # Submitting only while few pieces are in flight (Pool.imap would read the whole corpus
    # ahead) is what bounds memory; two per worker keep every worker busy.
    in_flight = 2 * workers
    with _encoder(tok, dtype, workers) as submit:
        pending: deque = deque()
        for i, path in enumerate(files):
            info: dict[str, Any] = {}
            for j, piece in enumerate(read_pieces(path, chunk_bytes, info, on_bytes)):
                if i > 0 and j == 0 and separator:
                    pending.append(_Done(separator))
                pending.append(submit(piece))
                while len(pending) > in_flight:
                    yield pending.popleft().result()
            sources.append(info)
        while pending:
            yield pending.popleft().result()


def default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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
    progress: Callable[[str, int, int, str], None] | None = None,
) -> PrepareResult:
    """Tokenize a corpus into out_dir/{train.bin, val.bin, meta.json} (see the module docstring).

    vocab_size and train_bytes go to tokenizers that learn from the corpus (bpe). Each split must
    hold more than block_size tokens, so that training can draw one block and its targets.
    workers: encoding processes (default: the CPUs this process may use). progress(stage, done,
    total, unit) reports each stage: "vocabulary" (corpus bytes read to learn the vocabulary),
    "merges" (tokens in a BPE vocabulary) and "encoding" (corpus bytes encoded).
    """
    if (input_path is None) == (dataset is None):
        raise GptcliError("give exactly one of --input PATH or --dataset NAME")
    if tokenizer not in TOKENIZERS:
        raise GptcliError(
            f"unknown tokenizer '{tokenizer}'; choose one of: {', '.join(TOKENIZERS.names())}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise GptcliError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if block_size < 1:
        raise GptcliError(f"--block-size must be at least 1, got {block_size}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise GptcliError(f"--workers must be at least 1, got {workers}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    cls = TOKENIZERS[tokenizer]
    options = {"vocab_size": vocab_size, "train_bytes": train_bytes}
    options = {key: value for key, value in options.items() if value is not None}
    unused = [key for key in options if key not in cls.corpus_options]
    if unused:
        flag = "--" + unused[0].replace("_", "-")
        raise GptcliError(f"{flag} does not apply to --tokenizer {tokenizer}")
    root = Path(input_path) if input_path is not None else fetch_dataset(dataset)
    if out_dir is None:
        stem = dataset or (root.stem if root.is_file() else root.name)
        out_dir = Path("data") / f"{stem}_{tokenizer}"
    out_dir = Path(out_dir)
    inside = (root.resolve(), out_dir.resolve())
    if inside[0] == inside[1] or inside[0] in inside[1].parents or inside[1] in inside[0].parents:
        raise GptcliError(
            f"--out {out_dir} and the input {root} overlap; write the dataset somewhere else"
        )
    if out_dir.exists() and not force:
        raise GptcliError(f"{out_dir} already exists; pass --force to replace it")
    files = source_files(root)
    total = sum(path.stat().st_size for path in files)
    if total == 0:
        raise GptcliError(f"the corpus at {root} is empty; give it some text")
    report = progress or (lambda stage, done, total, unit: None)

    start = time.perf_counter()

    def merges(done: int, n: int) -> None:
        report("merges", done, n, "token")

    texts = _read_corpus(files, chunk_bytes, _counter(report, "vocabulary", total))
    # closing(): a tokenizer that reads only part of the corpus leaves a file open.
    with contextlib.closing(texts):
        tok = cls.from_corpus(texts, progress=merges, **options)
    learned = time.perf_counter()
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 2**16 else np.uint32)
    if total < MIN_POOL_CHUNKS * chunk_bytes:
        workers = 1

    with atomic.new_dir(out_dir) as tmp:
        sources: list[dict[str, Any]] = []
        on_bytes = _counter(report, "encoding", total)
        with open(tmp / "tokens.bin", "wb") as f:
            for data in _encoded(tok, files, dtype, workers, chunk_bytes, sources, on_bytes):
                f.write(data)
            n_tokens = f.tell() // dtype.itemsize
        n_val = int(n_tokens * val_fraction)
        n_train = n_tokens - n_val
        if min(n_train, n_val) <= block_size:
            raise GptcliError(
                f"the corpus is too small: {n_tokens} tokens give {n_train} train and {n_val} "
                f"val tokens at --val-fraction {val_fraction}; each split needs more than "
                f"--block-size {block_size} (one training block and its targets)"
            )
        _split_tail(
            tmp / "tokens.bin", tmp / "train.bin", tmp / "val.bin", n_train * dtype.itemsize
        )
        meta = {
            "gptcli_version": gptcli.__version__,
            "tokenizer": tok.spec(),
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "tokens": {"train": n_train, "val": n_val},
            "val_fraction": val_fraction,
            "sources": sources,
        }
        atomic.write_json(tmp / "meta.json", meta)
        for name, text in tok.extra_files().items():
            (tmp / name).write_text(text, encoding="utf-8")
    seconds = {"tokenizer": learned - start, "encode": time.perf_counter() - learned}
    return PrepareResult(out_dir, tok.vocab_size, n_train, n_val, total, seconds)


def _counter(report: Callable[[str, int, int, str], None], stage: str, total: int):
    """on_bytes for read_pieces: reports the running count of bytes read in stage."""
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
