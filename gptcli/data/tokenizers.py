"""One Tokenizer interface: GPT-2's BPE (tiktoken), a character vocabulary, and a byte-level BPE
trained on the corpus (gptcli.bpe) that tiktoken then runs.

A tokenizer is fully described by its spec (a JSON-able dict) that travels in the dataset's
meta.json and in every checkpoint, so sampling rebuilds the exact tokenizer from either alone.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from gptcli.errors import GptcliError
from gptcli.registry import Registry

TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer")


class Tokenizer(ABC):
    name: str
    vocab_size: int

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids for text; raises GptcliError if text holds something the vocabulary lacks."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text for ids; never raises on a sequence cut inside a multi-byte character."""

    @abstractmethod
    def decode_bytes(self, ids: list[int]) -> bytes:
        """The raw UTF-8 bytes of ids, for decoding a stream incrementally."""

    @abstractmethod
    def spec(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: dict[str, Any]) -> Tokenizer: ...

    @abstractmethod
    def start_ids(self) -> list[int]:
        """What generation starts from when the prompt is empty."""

    def encode_array(self, text: str) -> np.ndarray:
        """encode(text) as a uint32 array; tokenizers override it where that is much faster."""
        return np.asarray(self.encode(text), dtype=np.uint32)

    # The keyword options from_corpus takes (`gptcli prepare` refuses the others by name).
    corpus_options: tuple[str, ...] = ()

    @classmethod
    def from_corpus(
        cls,
        texts: Iterable[str],
        *,
        progress: Callable[[int, int], None] | None = None,
        **options: Any,
    ) -> Tokenizer:
        """The tokenizer for a corpus: fixed ones ignore it, others learn their vocabulary.

        texts is the corpus in pieces, read lazily (a tokenizer may stop early), cut only where
        GPT-2's split pattern cuts anyway. progress(done, total) reports long training.
        """
        return cls()

    def extra_files(self) -> dict[str, str]:
        """Files written beside meta.json in a dataset (name -> text), for other tools."""
        return {}

    # Placed between documents when a corpus has several; None joins them directly.
    separator_id: int | None = None

    def for_thread(self) -> Tokenizer:
        """A tokenizer for another thread to encode with at full speed (this one, unless sharing
        it costs)."""
        return self


class _TiktokenTokenizer(Tokenizer):
    """A tokenizer that tiktoken runs; self.enc is the tiktoken.Encoding."""

    def __init__(self, enc):
        self.enc = enc
        self.vocab_size = enc.n_vocab
        self.separator_id = enc.eot_token

    def encode(self, text: str) -> list[int]:
        # Ordinary text only: a literal "<|endoftext|>" in a corpus or prompt stays plain text.
        return self.enc.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        # With no special token allowed or disallowed this is encode_ordinary, minus the list.
        return self.enc.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.enc.decode_bytes(list(ids))

    def start_ids(self) -> list[int]:
        return [self.enc.eot_token]

    def for_thread(self) -> Tokenizer:
        """A copy with a tiktoken Encoding of its own (the same ranks, built in ~15 ms). Threads
        sharing one Encoding share state in its regex and run slower: on 2 cores, 46 MB took
        1.5-2.0 s (3.6 s when a pool thread encoded first) against 1.25 s with one each. Reads
        tiktoken's private fields; if a tiktoken keeps them elsewhere, this one is shared."""
        import tiktoken

        enc = self.enc
        try:
            own = tiktoken.Encoding(
                enc.name,
                pat_str=enc._pat_str,
                mergeable_ranks=enc._mergeable_ranks,
                special_tokens=enc._special_tokens,
            )
        except AttributeError:
            return self
        copied = copy.copy(self)
        copied.enc = own
        return copied


@TOKENIZERS.register("gpt2")
class GPT2Tokenizer(_TiktokenTokenizer):
    name = "gpt2"

    def __init__(self):
        import tiktoken

        try:
            enc = tiktoken.get_encoding("gpt2")
        except Exception as exc:  # tiktoken raises requests' errors, among others, when offline
            raise GptcliError(
                "could not load GPT-2's BPE files for tiktoken "
                f"({type(exc).__name__}); with no network, set TIKTOKEN_CACHE_DIR to a folder "
                "holding tiktoken's cached gpt2 files (e.g. ../shared/tiktoken_cache)"
            ) from None
        super().__init__(enc)

    def spec(self) -> dict[str, Any]:
        return {"type": self.name}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> GPT2Tokenizer:
        return cls()


# How much of a corpus (its first bytes) `--tokenizer bpe` trains on unless --train-bytes says
# otherwise: plenty for a vocabulary of tens of thousands. It bounds the trainer's memory, which
# grows with the distinct pre-split chunks: ~70 MB for 10 MB of English, but ~450 MB for 6 MB of
# Chinese, whose chunks are whole phrases (no spaces between words).
DEFAULT_TRAIN_BYTES = 20_000_000
EOT = "<|endoftext|>"


@TOKENIZERS.register("bpe")
class BPETokenizer(_TiktokenTokenizer):
    """A byte-level BPE trained on the corpus by gptcli.bpe; tiktoken encodes with its ranks.

    The vocabulary is the ranks (256 bytes, then the merges in order) plus <|endoftext|>.
    """

    name = "bpe"
    corpus_options = ("vocab_size", "train_bytes")

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str | None = None,
        special_tokens: dict[str, int] | None = None,
    ):
        import tiktoken

        from gptcli.data.bpe import GPT2_SPLIT_PATTERN

        self.ranks = ranks
        self.pattern = GPT2_SPLIT_PATTERN if pattern is None else pattern
        self.special_tokens = {EOT: len(ranks)} if special_tokens is None else special_tokens
        if EOT not in self.special_tokens:
            raise GptcliError(f"a bpe tokenizer needs the special token {EOT}")
        enc = tiktoken.Encoding(
            name="gptcli-bpe",
            pat_str=self.pattern,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        super().__init__(enc)

    @classmethod
    def from_corpus(
        cls,
        texts: Iterable[str],
        *,
        progress: Callable[[int, int], None] | None = None,
        vocab_size: int | None = None,
        train_bytes: int | None = None,
    ) -> BPETokenizer:
        from gptcli.data.bpe import GPT2_SPLIT_PATTERN, count_chunks, train_bpe_from_counts

        if vocab_size is None:
            raise GptcliError("--tokenizer bpe needs --vocab-size N (e.g. 4096)")
        if vocab_size < 257:
            raise GptcliError(
                f"--vocab-size must be at least 257 for bpe (256 byte tokens and {EOT}), "
                f"got {vocab_size}"
            )
        if train_bytes is None:
            train_bytes = DEFAULT_TRAIN_BYTES
        if train_bytes < 1:
            raise GptcliError(f"--train-bytes must be at least 1, got {train_bytes}")
        counts = count_chunks(_first_bytes(texts, train_bytes), GPT2_SPLIT_PATTERN)
        return cls(train_bpe_from_counts(counts, vocab_size - 1, progress))

    def spec(self) -> dict[str, Any]:
        from gptcli.data.bpe import dump_ranks

        return {
            "type": self.name,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "ranks": dump_ranks(self.ranks),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> BPETokenizer:
        from gptcli.data.bpe import load_ranks

        try:
            return cls(load_ranks(spec["ranks"]), spec["pattern"], spec["special_tokens"])
        except ValueError as exc:
            raise GptcliError(f"the bpe tokenizer spec is corrupt ({exc})") from None

    def extra_files(self) -> dict[str, str]:
        # tiktoken's own file format, so other tools can load the vocabulary directly.
        return {"tokenizer.tiktoken": self.spec()["ranks"]}


def _first_bytes(texts: Iterable[str], limit: int) -> Iterator[str]:
    """texts up to limit UTF-8 bytes in all; stops reading there."""
    left = limit
    for text in texts:
        data = text.encode("utf-8")
        if len(data) >= left:
            # The cut may halve a word or a character: fine for counting, it is one chunk.
            yield data[:left].decode("utf-8", errors="ignore")
            return
        left -= len(data)
        yield text


_UNKNOWN = np.iinfo(np.uint32).max


@TOKENIZERS.register("char")
class CharTokenizer(Tokenizer):
    """nanoGPT's shakespeare_char: one id per distinct character of the corpus, in sorted order."""

    name = "char"

    def __init__(self, chars: str):
        if not chars:
            raise GptcliError("a char tokenizer needs at least one character")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)
        # code point -> id for encode_array; the last slot, unknown, also takes larger code points.
        codes = [ord(c) for c in chars]
        self._table = np.full(max(codes) + 2, _UNKNOWN, dtype=np.uint32)
        self._table[codes] = np.arange(len(chars), dtype=np.uint32)

    @classmethod
    def from_corpus(
        cls,
        texts: Iterable[str],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> CharTokenizer:
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls("".join(sorted(chars)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            missing = sorted({c for c in text if c not in self.stoi})
            shown = ", ".join(repr(c) for c in missing[:10])
            raise GptcliError(
                f"text has {len(missing)} character(s) the char vocabulary lacks: {shown}; "
                "use only characters of the training corpus"
            ) from None

    def encode_array(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = self._table[np.minimum(points, len(self._table) - 1)]
        if (ids == _UNKNOWN).any():
            self.encode(text)  # raises, naming the missing characters
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def spec(self) -> dict[str, Any]:
        return {"type": self.name, "chars": self.chars}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CharTokenizer:
        return cls(spec["chars"])

    def start_ids(self) -> list[int]:
        return [self.stoi.get("\n", 0)]


def tokenizer_from_spec(spec: Any) -> Tokenizer:
    if not isinstance(spec, dict) or spec.get("type") not in TOKENIZERS:
        raise GptcliError(
            f"unknown tokenizer spec {spec!r}; expected one of {', '.join(TOKENIZERS.names())}"
        )
    try:
        return TOKENIZERS[spec["type"]].from_spec(spec)
    except (KeyError, TypeError) as exc:
        raise GptcliError(f"tokenizer spec {spec!r} is incomplete: missing {exc}") from None
