"""One process per run directory: an advisory lock held while a process writes into it.

The lock is flock(2) on DIR/.lock, so the kernel drops it when its holder dies however it dies
(kill -9 included): a stale lock file never blocks the next run. The file also names the holder
(pid and command) so that a refused process can say who holds the directory.

Locks are reentrant within a process (train's final evaluation writes eval.json into the run it
already holds), and a process's locks are counted by directory, not by file descriptor, because
flock treats two descriptors of one process on one file as two competing holders.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from gptcli.errors import GptcliError

LOCK_FILE = ".lock"

_held: dict[Path, tuple[int, int]] = {}  # directory -> (file descriptor, depth)
_guard = threading.Lock()


class DirectoryBusy(GptcliError):
    """Another live process holds the directory."""

    def __init__(self, directory: Path, holder: str, advice: str):
        super().__init__(f"{directory} is in use by {holder}; {advice}")
        self.directory, self.holder = directory, holder


def holder_of(directory: Path) -> str | None:
    """Who holds directory's lock ('process 123 (gptcli train ...)'), or None when nobody does."""
    if Path(directory).resolve() in _held:
        return None  # this process: never busy for itself
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(directory: str | Path, advice: str = "wait for it to finish") -> Iterator[None]:
    """Hold directory (created if missing) for the block, or raise DirectoryBusy at once,
    naming the holder and then advice."""
    key = Path(directory).resolve()
    made = _first_missing(key)
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
        else:
            _held[key] = (_acquire(key, advice), 1)
    done = False
    try:
        yield
        done = True
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                if not done and made is not None:
                    _unmake(key, made)  # a refused run leaves no directory behind
                os.close(fd)  # releases the flock


def _first_missing(directory: Path) -> Path | None:
    """The outermost of directory and its parents that does not exist yet."""
    missing = None
    for path in (directory, *directory.parents):
        try:
            os.stat(path)
        except FileNotFoundError:
            missing = path
            continue
        except OSError:
            pass  # cannot tell (no permission): taken as there, so never removed
        return missing
    return missing


def _unmake(directory: Path, made: Path) -> None:
    """Remove directory, and its parents up to made, where they hold nothing but the lock:
    what this process made for a run that failed before it wrote anything."""
    try:
        if {p.name for p in directory.iterdir()} != {LOCK_FILE}:
            return
        (directory / LOCK_FILE).unlink()
        for path in (directory, *directory.parents):
            path.rmdir()  # fails, and stops, where anything else was put meanwhile
            if path == made:
                return
    except OSError:
        return


def _acquire(directory: Path, advice: str) -> int:
    path = directory / LOCK_FILE
    while True:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise GptcliError(
                f"cannot write in {directory} ({exc.strerror}); pick a directory you can write to"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryBusy(directory, _describe(path), advice) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        # A refused run removed the lock file (and its directory) between our open and our
        # flock: the lock we hold is on a file nobody else will open. Start again.
        os.close(fd)
    # The holder's name, for whoever is refused; written in place (the lock is on this inode,
    # so the file must not be replaced).
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {_command()}\n".encode(), 0)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _describe(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" ({command})" if command else "")


def _command() -> str:
    argv = list(sys.argv) or ["python"]
    # `python -m gptcli` (as torchrun and the sweep start it): name the package, not the file.
    main = os.path.basename(os.path.dirname(argv[0])) if argv[0].endswith("__main__.py") else ""
    argv[0] = main or os.path.basename(argv[0])
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."
