"""gptcli's tokenizers as files that transformers' AutoTokenizer reads with no custom code.

GPT-2's BPE and gptcli's byte-level BPE become vocab.json + merges.txt (GPT2Tokenizer's files);
the char tokenizer becomes a tokenizer.json for PreTrainedTokenizerFast, written here as plain
JSON so that gptcli itself never needs the `tokenizers` package.
"""

from __future__ import annotations

import functools
from typing import Any

from gptcli.data.tokenizers import EOT, BPETokenizer, CharTokenizer, Tokenizer
from gptcli.errors import GptcliError

GPT2_PATTERNS = (
    # GPT2_SPLIT_PATTERN, as older tiktoken releases and gptcli's BPE trainer spell it ...
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    # ... and newer tiktoken's equivalent possessive form.
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
)
# A token no char vocabulary can hold (chars are one character each), so unknown text fails.
_CHAR_UNK = "<unk>"


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, the alphabet of vocab.json and merges.txt:
    printable Latin-1 bytes stand for themselves, the others (space, controls) for code points
    from 256 on, in byte order."""
    kept = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)}
    kept |= set(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in kept:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _text(token: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in token)


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge that made each multi-byte token, in rank order.

    tiktoken keeps only the ranks of merged tokens; transformers' BPE wants the merges. A token's
    merge is found by running BPE on its own bytes with only the lower-ranked tokens: what is
    left are the two parts whose merge made it.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, at = rank, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1], rank)
                if r < best:
                    best, at = r, i
            if at < 0:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) != 2 or any(ranks.get(p, rank) >= rank for p in parts):
            raise GptcliError(
                f"BPE token {token!r} (rank {rank}) is not a merge of two lower-ranked tokens; "
                "its vocabulary cannot be written as merges"
            )
        merges.append((parts[0], parts[1]))
    return merges


def _tiktoken_vocab(tokenizer: Tokenizer) -> tuple[dict[bytes, int], dict[str, int]]:
    """(mergeable ranks, special tokens) of a tokenizer that tiktoken runs."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.ranks, tokenizer.special_tokens
    enc = tokenizer.enc
    specials = {name: enc.encode_single_token(name) for name in enc.special_tokens_set}
    special_ids = set(specials.values())
    ranks = {
        enc.decode_single_token_bytes(i): i for i in range(enc.n_vocab) if i not in special_ids
    }
    return ranks, specials


def hf_problem(tokenizer: Tokenizer) -> str | None:
    """Why transformers cannot run tokenizer as gptcli does (a message), or None."""
    if tokenizer.name not in ("gpt2", "bpe", "char"):
        return f"the {tokenizer.name!r} tokenizer has no Hugging Face form"
    if isinstance(tokenizer, BPETokenizer) and tokenizer.pattern not in GPT2_PATTERNS:
        return "the bpe tokenizer's split pattern is not GPT-2's, which GPT2Tokenizer hard-codes"
    return None


def tokenizer_files(tokenizer: Tokenizer, max_length: int) -> dict[str, Any]:
    """File name -> content (a JSON-able object, or text for .txt files) for AutoTokenizer."""
    config: dict[str, Any] = {
        "model_max_length": max_length,
        # transformers would otherwise rewrite " ." as "." when decoding.
        "clean_up_tokenization_spaces": False,
    }
    if isinstance(tokenizer, CharTokenizer):
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        return {"tokenizer.json": _char_tokenizer_json(tokenizer), "tokenizer_config.json": config}
    ranks, specials = _tiktoken_vocab(tokenizer)
    vocab = {_text(token): rank for token, rank in ranks.items()}
    vocab.update(specials)
    merges = "".join(f"{_text(a)} {_text(b)}\n" for a, b in recover_merges(ranks))
    config.update(
        tokenizer_class="GPT2Tokenizer",
        add_prefix_space=False,
        add_bos_token=False,
        errors="replace",
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
    )
    others = sorted(name for name in specials if name != EOT)
    if others:
        config["additional_special_tokens"] = others
    return {
        "vocab.json": vocab,
        "merges.txt": "#version: 0.2\n" + merges,
        "tokenizer_config.json": config,
    }


def _char_tokenizer_json(tokenizer: CharTokenizer) -> dict[str, Any]:
    """The `tokenizers` serialization of a char vocabulary: every character its own piece
    ([\\s\\S] matches newlines too, where `.` would not), each looked up whole, and decoding
    joins the pieces with nothing between them."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"Regex": r"[\s\S]"},
            "behavior": "Isolated",
            "invert": False,
        },
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": dict(tokenizer.stoi), "unk_token": _CHAR_UNK},
    }
