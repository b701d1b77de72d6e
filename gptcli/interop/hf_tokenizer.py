"""gptcli's tokenizers as files that transformers' AutoTokenizer reads with no custom code.

GPT-2's BPE and gptcli's byte-level BPE become vocab.json + merges.txt (GPT2Tokenizer's files);
the char tokenizer becomes a tokenizer.json for PreTrainedTokenizerFast, written here as plain
JSON so that gptcli itself never needs the `tokenizers` package.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
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


# --- reading: a Hugging Face directory's tokenizer files -> a gptcli tokenizer spec ---------

_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model",
                    "tokenizer_config.json", "special_tokens_map.json")  # fmt: skip


def read_tokenizer(path: Path, gpt2_default: bool) -> dict[str, Any]:
    """The spec of the tokenizer an HF directory's files describe, when gptcli can run it
    exactly: GPT-2's BPE or a byte-level BPE (vocab.json + merges.txt), or char (a WordLevel
    tokenizer.json of single characters), as gptcli's own exports write them. A directory with
    no tokenizer files is GPT-2's when gpt2_default (a plain GPT-2 checkpoint)."""
    found = [name for name in _TOKENIZER_FILES if (path / name).is_file()]
    spec = None
    if "vocab.json" in found and "merges.txt" in found:
        spec = _bpe_spec(path)
    elif "tokenizer.json" in found:
        spec = _char_spec(path)
    elif not found and gpt2_default:
        spec = {"type": "gpt2"}
    if spec is None:
        raise GptcliError(
            f"{path}'s tokenizer is not one gptcli can run (found: "
            f"{', '.join(found) or 'no tokenizer files'}); gptcli runs GPT-2's BPE, a byte-level "
            "BPE (vocab.json + merges.txt) and char (a WordLevel tokenizer.json), as its exports "
            "write them"
        )
    return spec


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GptcliError(f"cannot read {path} ({exc})") from None


def _bpe_spec(path: Path) -> dict[str, Any] | None:
    vocab = _read_json(path / "vocab.json")
    config_path = path / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    named = {config.get(k) for k in ("bos_token", "eos_token", "unk_token")}
    named |= set(config.get("additional_special_tokens") or [])
    specials = {text: i for text, i in vocab.items() if text in named}
    inverse = {c: b for b, c in byte_to_unicode().items()}
    ranks = {}
    for text, i in vocab.items():
        if text in specials:
            continue
        if any(c not in inverse for c in text):
            return None  # not byte-level
        ranks[bytes(inverse[c] for c in text)] = i
    if EOT not in specials or sorted(ranks.values()) != list(range(len(ranks))):
        return None
    lines = (path / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#")]
    try:
        ours = [(_text(a), _text(b)) for a, b in recover_merges(ranks)]
    except GptcliError:
        return None
    if ours != merges:
        return None  # merges in another order than the ranks: not what tiktoken would run
    spec = BPETokenizer(ranks, None, specials).spec()
    return {"type": "gpt2"} if _is_gpt2(ranks, specials) else spec


def _is_gpt2(ranks: dict[bytes, int], specials: dict[str, int]) -> bool:
    if len(ranks) != 50256 or specials != {EOT: 50256}:
        return False
    try:
        from gptcli.data.tokenizers import GPT2Tokenizer

        gpt2_ranks, _ = _tiktoken_vocab(GPT2Tokenizer())
    except Exception:  # GPT-2's files unavailable offline: the same BPE runs as bpe
        return False
    return gpt2_ranks == ranks


def _char_spec(path: Path) -> dict[str, Any] | None:
    data = _read_json(path / "tokenizer.json")
    if not isinstance(data, dict):
        return None
    model = data.get("model") or {}
    split = (data.get("pre_tokenizer") or {}).get("pattern", {}).get("Regex")
    decoder = (data.get("decoder") or {}).get("type")
    if model.get("type") != "WordLevel" or split != r"[\s\S]" or decoder != "Fuse":
        return None
    vocab = model.get("vocab") or {}
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))) or any(len(c) != 1 for c, _ in by_id):
        return None
    return CharTokenizer("".join(c for c, _ in by_id)).spec()
