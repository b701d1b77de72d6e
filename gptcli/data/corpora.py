"""Where a corpus' text comes from: files and directories of plain text or JSON Lines, either of
them gzip-compressed, Parquet (parquet.py), or a named corpus shipped inside the package.

A corpus is a sequence of documents, each its text in blocks: a text file is one document, a JSON
Lines file or a Parquet file one per line or row. Everything is streamed: a text file in blocks,
a JSON Lines file a batch of lines at a time, a Parquet file a batch of rows at a time.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gptcli.data.parquet import is_parquet, parquet_documents
from gptcli.data.pieces import BLOCKS_PER_CHUNK, CHUNK_BYTES, decode_blocks
from gptcli.errors import GptcliError, first_line

# Named corpora travel inside the package, gzip-compressed, so that they need no network. The
# sha256 is that of the published text, checked whenever one is used. shakespeare: karpathy's
# tiny-shakespeare (char-rnn), 1,115,394 bytes, public domain.
DATASETS = {
    "shakespeare": {
        "file": "tinyshakespeare.txt.gz",
        "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    },
}

# Where they are: beside this module (pyproject.toml's package-data installs them there).
DATA_DIR = Path(__file__).parent
# What a damaged gzip stream raises while it is read.
_GZIP_ERRORS = (OSError, EOFError, zlib.error)
# Progress is reported at most once per this many bytes of a file, not once per JSON line.
_REPORT_BYTES = 1 << 20


def dataset_file(name: str) -> Path:
    """The named corpus' file inside the package, after checking its text against the sha256."""
    if name not in DATASETS:
        raise GptcliError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    entry = DATASETS[name]
    path = DATA_DIR / entry["file"]
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(CHUNK_BYTES):
                digest.update(block)
    except _GZIP_ERRORS as exc:
        raise GptcliError(
            f"the packaged copy of dataset '{name}' cannot be read ({first_line(exc)}); "
            "reinstall gptcli"
        ) from None
    if digest.hexdigest() != entry["sha256"]:
        raise GptcliError(
            f"the packaged copy of dataset '{name}' ({path}) fails its sha256 check; "
            "reinstall gptcli"
        )
    return path


def source_files(
    path: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[Path]:
    """A file, or a directory's files (hidden ones left out), kept where their path below the
    directory matches an include glob (all, without one) and no exclude glob: `*.py` keeps the
    Python files at any depth, `site-packages/*` drops a tree."""
    if not path.exists():
        raise GptcliError(f"input not found: {path}")
    if path.is_file():
        return [path]

    def wanted(rel: str) -> bool:
        kept = not include or any(fnmatch.fnmatch(rel, g) for g in include)
        return kept and not any(fnmatch.fnmatch(rel, g) for g in exclude)

    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and wanted(p.relative_to(path).as_posix())
    )
    if not files:
        chosen = " with --include/--exclude as given" if include or exclude else ""
        raise GptcliError(f"input directory {path} holds no files{chosen}")
    return files


def documents(
    files: list[Path],
    chunk_bytes: int = CHUNK_BYTES,
    on_bytes: Callable[[int], None] | None = None,
    sources: list[dict[str, Any]] | None = None,
    text_field: str = "text",
) -> Iterator[Iterator[str]]:
    """The documents of files in order, each its text in blocks of a BLOCKS_PER_CHUNK'th of
    chunk_bytes (read each one to its end before the next). A name ending in .jsonl (or
    .jsonl.gz) is JSON Lines: each non-blank line an object whose text_field is one document; a
    .parquet file gives its text_field column's rows; any other file is one document.
    on_bytes(n) hears of every n bytes read from disk (compressed ones for .gz); once a file is
    read, sources gets its path and the size and sha256 of its (decompressed) bytes."""
    block = max(chunk_bytes // BLOCKS_PER_CHUNK, 1)
    for path in files:
        digest = hashlib.sha256()
        info: dict[str, Any] = {"path": str(path)}
        if is_parquet(path):
            yield from parquet_documents(path, block, text_field, info, on_bytes)
            if sources is not None:
                sources.append(info)
            continue
        with _Source(path, on_bytes) as source:
            if source.jsonl:
                yield from _jsonl_documents(source, block, text_field, info, digest)
            else:
                yield decode_blocks(source.read, source.name, block, info, digest)
            source.report(force=True)
        info["sha256"] = digest.hexdigest()
        if sources is not None:
            sources.append(info)


JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


def is_json_lines(path: Path) -> bool:
    """JSON Lines by name (.jsonl or .ndjson, either gzip-compressed too)."""
    return path.name.lower().removesuffix(".gz").endswith(JSON_LINES_SUFFIXES)


class _Source:
    """An input file opened for reading: read() and lines() give its bytes, decompressed if its
    name ends in .gz, and report progress in bytes of the file itself."""

    def __init__(self, path: Path, on_bytes: Callable[[int], None] | None):
        self.name = str(path)
        name = path.name.lower()
        self.gzip = name.endswith(".gz")
        self.jsonl = is_json_lines(path)
        try:
            self.raw = open(path, "rb")  # noqa: SIM115 -- closed by __exit__
        except OSError as exc:
            raise GptcliError(f"cannot read {path}: {exc.strerror or exc}") from None
        self.stream = gzip.GzipFile(fileobj=self.raw, mode="rb") if self.gzip else self.raw
        self.on_bytes = on_bytes
        self.reported = 0

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()
        self.raw.close()

    def read(self, n: int) -> bytes:
        with self._gzip_errors():
            data = self.stream.read(n)
        self.report()
        return data

    def lines(self) -> Iterator[bytes]:
        # A batch of lines at a time: per line, the checks and the report would cost more.
        while True:
            with self._gzip_errors():
                batch = self.stream.readlines(_REPORT_BYTES)
            if not batch:
                return
            self.report()
            yield from batch

    def report(self, force: bool = False) -> None:
        done = self.raw.tell()
        if self.on_bytes is not None and (force or done - self.reported >= _REPORT_BYTES):
            self.on_bytes(done - self.reported)
            self.reported = done

    @contextlib.contextmanager
    def _gzip_errors(self):
        try:
            yield
        except _GZIP_ERRORS as exc:
            if not self.gzip:
                raise
            raise GptcliError(f"{self.name} is not a valid gzip file ({first_line(exc)})") from None


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}
    return "null" if value is None else kinds.get(type(value), "a number")


def _jsonl_documents(
    source: _Source, block: int, text_field: str, info: dict[str, Any], digest: Any
) -> Iterator[Iterator[str]]:
    size = 0
    for number, line in enumerate(source.lines(), 1):
        digest.update(line)
        size += len(line)
        if line.isspace():
            continue  # a blank line holds no document
        text = _jsonl_text(line, f"{source.name}:{number}", text_field, first=number == 1)
        del line  # a one-line corpus is held once, as text, not also as bytes
        # A long document goes on in blocks, as a text file does, so that it is cut into pieces.
        yield (text[i : i + block] for i in range(0, len(text), block))
    info["bytes"] = size


def _jsonl_text(line: bytes, where: str, field: str, first: bool) -> str:
    """The text of one JSON line's field; where ("path:line") starts every error."""
    try:
        # Without its line end, which would be an unterminated string's "control character".
        record = json.loads(line.rstrip(b"\r\n").decode("utf-8-sig" if first else "utf-8"))
    except UnicodeDecodeError as exc:
        raise GptcliError(
            f"{where}: not UTF-8 text (bad byte at column {exc.start + 1}); convert it to UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        said = exc.msg if exc.msg.endswith(" at") else f"{exc.msg} at"
        raise GptcliError(f"{where}: not a JSON line ({said} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number; arrays nested too deep
        said = first_line(exc)
        raise GptcliError(f"{where}: not a JSON line this reader takes ({said})") from None
    if not isinstance(record, dict):
        raise GptcliError(f'{where}: {_json_kind(record)}, not an object with a "{field}" field')
    if field not in record:
        raise GptcliError(f'{where}: no "{field}" field; name the text\'s field with --text-field')
    text = record[field]
    if not isinstance(text, str):
        raise GptcliError(f'{where}: "{field}" is {_json_kind(text)}, not a string')
    # JSON may escape half of a surrogate pair alone (\ud83d), which no tokenizer can encode.
    if (b"\\ud" in line or b"\\uD" in line) and not _encodable(text):
        raise GptcliError(f'{where}: "{field}" holds a lone surrogate (\\ud800-\\udfff)')
    return text


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
