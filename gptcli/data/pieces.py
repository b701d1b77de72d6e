"""Reading text in pieces of about a megabyte, cut only where GPT-2's split pattern cuts anyway,
so that encoding the pieces one by one gives exactly the tokens of the whole text."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import regex

from gptcli.errors import GptcliError

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


def read_corpus(
    files: list[Path], chunk_bytes: int, on_bytes: Callable[[int], None]
) -> Iterator[str]:
    for path in files:
        yield from read_pieces(path, chunk_bytes, on_bytes=on_bytes)
