"""Writes that never leave a half-written file or directory in place: write beside, rename in."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gptcli.errors import GptcliError


def write_bytes(path: Path, data: bytes) -> None:
    # Created by hand rather than by tempfile, whose files are private (0600): the kernel then
    # gives it the modes open() would (0644 under umask 022).
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new empty directory in parent, with the modes mkdir() gives (tempfile's are 0700)."""
    while True:
        path = Path(parent) / f"{prefix}{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


@contextlib.contextmanager
def new_dir(out_dir: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside out_dir; when the block succeeds it replaces
    out_dir whole, when it fails it is removed and out_dir is left as it was."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out_dir.parent, f".{out_dir.name}.tmp-")
    try:
        yield tmp
        if out_dir.exists():
            # Move the old one aside first (to a fresh name, so no leftover can be in the way),
            # and back again if the new one cannot take its place.
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replace(
    out_dir: Path, force: bool, *, label: str, what: str, why_not_ours: Callable[[Path], str | None]
) -> None:
    """Refuse, before anything is written, an out_dir that new_dir must not replace. --force
    replaces only what the same command wrote there earlier (why_not_ours(out_dir) is None, else
    it says why not): a mistyped --out must not delete a training run, a user's files or a file.
    A missing out_dir is fine; an empty one needs --force."""
    if not (out_dir.exists() or out_dir.is_symlink()):
        return
    instead = f"--force replaces only {what}, so pick an empty or new directory"
    if not out_dir.is_dir():
        kind = "a file, not a directory" if out_dir.is_file() else "not a directory"
        raise GptcliError(f"{label} {out_dir} is {kind}; {instead}")
    try:
        entries = sorted(p.name for p in out_dir.iterdir())
    except OSError as exc:
        raise GptcliError(f"{label} {out_dir}: cannot read it ({exc.strerror})") from None
    if entries and (why := why_not_ours(out_dir)) is not None:
        held = _names(entries)
        raise GptcliError(f"{label} {out_dir} holds {held}, not {what} ({why}); {instead}")
    if not force:
        held = f"holds {what}" if entries else "already exists"
        raise GptcliError(f"{label} {out_dir} {held}; pass --force to replace it")


def _names(entries: list[str], shown: int = 4) -> str:
    # Hidden names (a .lock) last: the others say better what the directory is.
    entries = sorted(entries, key=lambda name: (name.startswith("."), name))
    more = len(entries) - shown
    return ", ".join(entries[:shown]) + (f" and {more} more" if more > 0 else "")
