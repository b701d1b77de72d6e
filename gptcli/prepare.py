"""Corpus -> data/<name>/{train.bin, val.bin, meta.json}.

The dataset directory is written beside its final place and renamed into it at the end, so an
interrupted or failed prepare never leaves a half-written dataset (nor destroys an old one).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gptcli
from gptcli.errors import GptcliError
from gptcli.tokenizers import TOKENIZERS, Tokenizer

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
    _atomic_write_bytes(path, data)
    return path


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def read_text(path: Path) -> tuple[str, dict[str, Any]]:
    data = path.read_bytes()
    if b"\0" in data:
        raise GptcliError(f"{path} looks binary (it holds NUL bytes); give text files only")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GptcliError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start}); convert it to UTF-8"
        ) from None
    return text, {"path": str(path), "bytes": len(data), "sha256": _sha256(data)}


def encode_documents(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    ids: list[int] = []
    for i, text in enumerate(texts):
        if i and tokenizer.separator_id is not None:
            ids.append(tokenizer.separator_id)
        ids.extend(tokenizer.encode(text))
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    return np.asarray(ids, dtype=dtype)


def prepare(
    *,
    input_path: Path | None = None,
    dataset: str | None = None,
    tokenizer: str = "gpt2",
    out_dir: Path | None = None,
    val_fraction: float = 0.1,
    force: bool = False,
) -> PrepareResult:
    if (input_path is None) == (dataset is None):
        raise GptcliError("give exactly one of --input PATH or --dataset NAME")
    if tokenizer not in TOKENIZERS:
        raise GptcliError(
            f"unknown tokenizer '{tokenizer}'; choose one of: {', '.join(TOKENIZERS.names())}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise GptcliError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    root = Path(input_path) if input_path is not None else fetch_dataset(dataset)
    if out_dir is None:
        stem = dataset or (root.stem if root.is_file() else root.name)
        out_dir = Path("data") / f"{stem}_{tokenizer}"
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise GptcliError(f"{out_dir} already exists; pass --force to replace it")

    texts, sources = [], []
    for path in source_files(root):
        text, info = read_text(path)
        texts.append(text)
        sources.append(info)
    if not any(texts):
        raise GptcliError(f"the corpus at {root} is empty; give it some text")

    tok = TOKENIZERS[tokenizer].from_corpus(texts)
    ids = encode_documents(tok, texts)
    n_val = int(len(ids) * val_fraction)
    n_train = len(ids) - n_val
    if n_val < 2 or n_train < 2:
        raise GptcliError(
            f"the corpus is too small: {len(ids)} tokens give {n_train} train and {n_val} val "
            f"tokens at --val-fraction {val_fraction}; each split needs at least 2"
        )
    meta = {
        "gptcli_version": gptcli.__version__,
        "tokenizer": tok.spec(),
        "vocab_size": tok.vocab_size,
        "dtype": np.dtype(ids.dtype).name,
        "tokens": {"train": int(n_train), "val": int(n_val)},
        "val_fraction": val_fraction,
        "sources": sources,
    }
    _write_dataset(out_dir, ids[:n_train], ids[n_train:], meta)
    return PrepareResult(out_dir, tok.vocab_size, n_train, n_val, sum(s["bytes"] for s in sources))


def _write_dataset(out_dir: Path, train: np.ndarray, val: np.ndarray, meta: dict) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        train.tofile(tmp / "train.bin")
        val.tofile(tmp / "val.bin")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        if out_dir.exists():
            # Move the old dataset aside first so that a failure here still leaves one intact.
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
