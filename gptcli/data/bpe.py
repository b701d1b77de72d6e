"""Train a byte-level BPE vocabulary and store it in tiktoken's mergeable-ranks format.

The algorithm is Sennrich et al.'s (2016): count adjacent symbol pairs, merge the most frequent
pair into a new symbol, repeat. As in GPT-2 the symbols start as the 256 bytes, so any text is
encodable, and the text is first cut by a regex so merges never cross word/space/punct chunks.
"""

from __future__ import annotations

import base64
import heapq
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from itertools import pairwise

import regex

# The GPT-2 split pattern as older tiktoken releases spell it; newer ones use an equivalent
# possessive form. Kept identical to tiktoken's so training and encoding cut text the same way.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

Pair = tuple[int, int]


def _merge(
    seq: list[int], pair: Pair, new: int, weight: int, delta: dict[Pair, int]
) -> tuple[list[int], list[Pair]]:
    """seq with pair replaced by new; adds the pair-count changes, times weight, to delta and
    returns the pairs formed with new (possibly repeated, possibly cancelled later in seq)."""
    a, b = pair
    out: list[int] = []
    made: list[Pair] = []
    i, n = 0, len(seq)
    while i < n:
        # Left to right, non-overlapping: "aaa" with pair (a, a) becomes [aa, a], as tiktoken does.
        if seq[i] == a and i + 1 < n and seq[i + 1] == b:
            delta[pair] -= weight
            # Only the neighbours' pairs change. When the left neighbour is the previous match's
            # result ("abab"), the (new, a) taken off here is the pair that match just counted on
            # its right, so the counts still balance.
            if out:
                left = out[-1]
                delta[left, a] -= weight
                delta[left, new] += weight
                made.append((left, new))
            if i + 2 < n:
                right = seq[i + 2]
                delta[b, right] -= weight
                delta[new, right] += weight
                made.append((new, right))
            out.append(new)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out, made


def count_chunks(texts: Iterable[str], pattern: str = GPT2_SPLIT_PATTERN) -> Counter[str]:
    """How often each pre-split chunk occurs in texts. The texts must be cut where the pattern cuts
    anyway (as gptcli.prepare reads a corpus), so the counts equal those of the joined text."""
    split = regex.compile(pattern)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(split.findall(text))
    return counts


def train_bpe(text: str, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN) -> dict[bytes, int]:
    """Mergeable ranks for text: see train_bpe_from_counts."""
    return train_bpe_from_counts(count_chunks([text], pattern), vocab_size)


def train_bpe_from_counts(
    chunk_counts: Mapping[str, int],
    vocab_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[bytes, int]:
    """Mergeable ranks (token bytes -> rank) with 256 byte tokens plus at most vocab_size - 256
    merged ones; fewer when no adjacent pair is left to merge. progress(tokens, vocab_size) is
    called now and then as the vocabulary grows.

    Pairs are counted with overlaps ("aaa" holds (a, a) twice). Pairs seen only once are merged
    too, so a small corpus may end up with whole rare chunks as tokens. Ties in count go to the
    pair with the smaller (left rank, right rank), which makes training reproducible.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (one token per byte), got {vocab_size}")
    # Work on unique chunks weighted by frequency: natural text repeats its words a lot.
    seqs = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())

    counts, where, heap = _pair_index(seqs, freqs)

    vocab = [bytes([b]) for b in range(256)]
    ranks = {token: rank for rank, token in enumerate(vocab)}
    while len(vocab) < vocab_size and heap:
        neg_count, pair = heapq.heappop(heap)
        if counts.get(pair) != -neg_count:
            continue
        merged = vocab[pair[0]] + vocab[pair[1]]
        # tiktoken keys tokens by bytes, so a pair spelling an existing token must reuse its rank.
        # Chunk-level BPE never does this (a string's inside merges the same way wherever it is
        # not cut by a merge across its edge, so it is always built from the same pair), but a
        # duplicate would silently corrupt the ranks, so the guard stays.
        new = ranks.get(merged)
        if new is None:
            new = ranks[merged] = len(vocab)
            vocab.append(merged)
            if progress is not None and len(vocab) % 64 == 0:
                progress(len(vocab), vocab_size)

        _merge_everywhere(pair, new, seqs, freqs, counts, where, heap)
    if progress is not None:
        progress(len(vocab), vocab_size)
    return ranks


def _pair_index(seqs: list[list[int]], freqs: list[int]):
    """Pair counts, the chunks holding each pair, and a heap of pairs by count."""
    counts: dict[Pair, int] = defaultdict(int)
    # pair -> ids of the chunks that hold it, and maybe of some that no longer do (see below),
    # with repeats: an array takes 4 bytes an id where a set takes ~50, and this is the bulk of
    # the memory (a 6 MB Chinese corpus: 465 MB peak instead of 810).
    where: dict[Pair, array] = defaultdict(lambda: array("i"))
    for i, seq in enumerate(seqs):
        for pair in pairwise(seq):
            counts[pair] += freqs[i]
            where[pair].append(i)
    # A max-heap by count with stale entries: every count change pushes a fresh entry, and a popped
    # entry whose count no longer matches is skipped, so finding the best pair costs O(log n).
    heap = [(-n, pair) for pair, n in counts.items()]
    heapq.heapify(heap)
    return counts, where, heap


def _merge_everywhere(pair: Pair, new: int, seqs, freqs, counts, where, heap) -> None:
    """Merge pair into new in every chunk that holds it, updating counts, index and heap."""
    delta: dict[Pair, int] = defaultdict(int)
    for i in set(where.pop(pair)):
        # A chunk's id is not taken out of the index when it loses a pair, so some ids here
        # may no longer hold it; merging those changes nothing.
        seqs[i], made = _merge(seqs[i], pair, new, freqs[i], delta)
        for p in made:
            where[p].append(i)
    for p, d in delta.items():
        if d == 0:
            continue
        n = counts[p] = counts[p] + d
        if n > 0:
            heapq.heappush(heap, (-n, p))
        else:
            del counts[p]
            where.pop(p, None)


def dump_ranks(ranks: dict[bytes, int]) -> str:
    """tiktoken's .tiktoken file format: `base64(token) rank` per line, by rank."""
    items = sorted(ranks.items(), key=lambda item: item[1])
    return "".join(f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in items)


def load_ranks(text: str) -> dict[bytes, int]:
    """Inverse of dump_ranks; blank lines are skipped, as tiktoken's own loader does."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
            raise ValueError(f"line {lineno}: expected '<base64 token> <rank>', got {line!r}")
        try:
            token = base64.b64decode(parts[0], validate=True)
        except ValueError:  # binascii.Error
            raise ValueError(f"line {lineno}: {parts[0]!r} is not valid base64") from None
        if token in ranks:
            raise ValueError(f"line {lineno}: token {token!r} appears twice")
        ranks[token] = int(parts[1])
    return ranks
