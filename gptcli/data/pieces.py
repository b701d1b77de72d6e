"""Cutting a corpus' documents into pieces of about a megabyte, only where GPT-2's split pattern
cuts anyway, so that encoding the pieces one by one gives exactly the tokens of the whole text."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import regex

from gptcli.errors import GptcliError

# Pieces are about this many bytes: big enough that handing one to a thread and finding its cut
# cost little next to encoding it, small enough that a few per thread in flight take little
# memory and that the last one keeps a single thread busy only briefly.
CHUNK_BYTES = 1 << 20
# A piece with no safe cut grows to at most this many chunks, then is cut anyway (see pieces).
MAX_PIECE_CHUNKS = 8
# Text comes in blocks of a quarter chunk: a piece ends in the block that fills it, so it holds
# one chunk to a quarter more. (Blocks of a whole chunk of bytes would make pieces of two chunks
# wherever the text is not all ASCII: fewer characters than a chunk, they would not fill one.)
BLOCKS_PER_CHUNK = 4

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


def decode_blocks(
    read: Callable[[int], bytes], name: str, chunk_bytes: int, info: dict[str, Any], digest: Any
) -> Iterator[str]:
    """The text that read(n) gives, decoded as UTF-8 in blocks of chunk_bytes; refuses binary
    data and bad UTF-8 (naming the offset) as it reads. digest hears every byte; at the end
    info["bytes"] is the count."""
    decoded = 0  # bytes of the stream in text so far
    partial = b""  # the first bytes of a character that the next block completes
    while block := read(chunk_bytes):
        digest.update(block)
        if b"\0" in block:
            raise GptcliError(f"{name} looks binary (it holds NUL bytes); give text files only")
        data = partial + block
        try:
            text, partial = data.decode("utf-8"), b""
        except UnicodeDecodeError as exc:
            if exc.reason != "unexpected end of data" or exc.end != len(data):
                raise _not_utf8(name, decoded + exc.start) from None
            text, partial = data[: exc.start].decode("utf-8"), data[exc.start :]
        decoded += len(data) - len(partial)
        yield text
    if partial:
        raise _not_utf8(name, decoded)
    info["bytes"] = decoded


def _not_utf8(name: str, offset: int) -> GptcliError:
    return GptcliError(
        f"{name} is not UTF-8 text (bad byte at offset {offset}); convert it to UTF-8"
    )


def pieces(documents: Iterable[Iterable[str]], chunk: int = CHUNK_BYTES) -> Iterator[list[str]]:
    """The documents (each its text in blocks) in pieces of about chunk characters, each a list
    of segments: a document boundary lies between two segments of a piece and nowhere else, so
    that the tokens of the corpus are each piece's segments encoded and joined by the separator,
    the pieces then simply concatenated. Small documents share a piece; a long one is cut by
    find_cut, at the last safe place of the block that brings the piece to chunk characters (at
    least one piece, [""] for no text at all).

    A stretch of MAX_PIECE_CHUNKS chunks with no safe cut at all (no whitespace, no change between
    letters, digits and punctuation: not natural text) is cut anyway, which can change the tokens
    right at the cut.
    """
    piece: list[str] = []  # the segments before the current document's text
    size = 0  # their characters
    emitted = False
    for i, blocks in enumerate(documents):
        if i and not piece:
            piece = [""]  # the separator before this document opens the piece
        # The document's text not yet in a piece: joined only when it may be cut, so that each
        # character is copied about once however small the blocks.
        held: list[str] = []
        length = searched = 0  # searched: no safe cut in the held text before there
        for block in blocks:
            held.append(block)
            length += len(block)
            if size + length < chunk:
                continue
            text = "".join(held)
            cut = find_cut(text, searched)
            if cut < 0 and length > MAX_PIECE_CHUNKS * chunk:
                cut = length
            if cut > 0:
                yield piece + [text[:cut]]
                piece, size, text, emitted = [], 0, text[cut:], True
            held, length, searched = [text], len(text), len(text)
        text = "".join(held)
        piece.append(text)
        size += len(text)
        if size >= chunk:
            yield piece
            piece, size, emitted = [], 0, True
    if piece or not emitted:
        yield piece or [""]


def segments(documents: Iterable[Iterable[str]], chunk: int = CHUNK_BYTES) -> Iterator[str]:
    """Every segment of pieces(documents, chunk) in order: the corpus' text in parts that end at
    a document boundary or a safe cut, for the tokenizers that learn from it."""
    for piece in pieces(documents, chunk):
        yield from piece
