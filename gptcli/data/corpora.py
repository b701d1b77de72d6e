"""Where a corpus' text comes from: files and directories, or a named corpus fetched once into
the user's cache and checked by sha256."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from gptcli import atomic
from gptcli.errors import GptcliError

DATASETS = {
    "shakespeare": {
        "url": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "filename": "tinyshakespeare.txt",
    },
}


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
