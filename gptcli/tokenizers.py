"""One Tokenizer interface: GPT-2's BPE (tiktoken) and a character vocabulary.

A tokenizer is fully described by its spec (a small JSON-able dict) that travels in the dataset's
meta.json and in every checkpoint, so sampling rebuilds the exact tokenizer from either alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

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

    @classmethod
    def from_corpus(cls, texts: list[str]) -> Tokenizer:
        """The tokenizer for a corpus: fixed ones ignore it, others learn their vocabulary."""
        return cls()

    # Placed between documents when a corpus has several; None joins them directly.
    separator_id: int | None = None


@TOKENIZERS.register("gpt2")
class GPT2Tokenizer(Tokenizer):
    name = "gpt2"

    def __init__(self):
        import tiktoken

        try:
            self.enc = tiktoken.get_encoding("gpt2")
        except Exception as exc:  # tiktoken raises requests' errors, among others, when offline
            raise GptcliError(
                "could not load GPT-2's BPE files for tiktoken "
                f"({type(exc).__name__}); with no network, set TIKTOKEN_CACHE_DIR to a folder "
                "holding tiktoken's cached gpt2 files (e.g. ../shared/tiktoken_cache)"
            ) from None
        self.vocab_size = self.enc.n_vocab
        self.separator_id = self.enc.eot_token

    def encode(self, text: str) -> list[int]:
        # Ordinary text only: a literal "<|endoftext|>" in a corpus or prompt stays plain text.
        return self.enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.enc.decode_bytes(list(ids))

    def spec(self) -> dict[str, Any]:
        return {"type": self.name}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> GPT2Tokenizer:
        return cls()

    def start_ids(self) -> list[int]:
        return [self.enc.eot_token]


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

    @classmethod
    def from_corpus(cls, texts: list[str]) -> CharTokenizer:
        return cls("".join(sorted(set().union(*texts))))

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
