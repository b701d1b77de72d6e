import random
from collections import Counter

import pytest
import regex
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken_ext.openai_public import r50k_pat_str

from gptcli.data.bpe import (
    GPT2_SPLIT_PATTERN,
    count_chunks,
    dump_ranks,
    load_ranks,
    train_bpe,
    train_bpe_from_counts,
)

EN = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "cats", "sleep"]
ZH = ["春眠不觉晓", "处处闻啼鸟", "夜来风雨声", "花落知多少", "床前明月光", "疑是地上霜"]
EMOJI = ["😀", "🎉", "👍🏽", "🐍", "❤️", "👨‍👩‍👧"]
OTHER = [", ", ". ", "\n", "\n\n", "  ", "42", " 2024", "'s", "!"]


def make_corpus(seed: int = 0, n: int = 3000) -> str:
    rng = random.Random(seed)
    parts = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.55:
            parts.append(" " + rng.choice(EN))
        elif kind < 0.75:
            parts.append(rng.choice(ZH) + rng.choice(["，", "。"]))
        elif kind < 0.85:
            parts.append(rng.choice(EMOJI))
        else:
            parts.append(rng.choice(OTHER))
    return "".join(parts)


def reference_bpe(text: str, vocab_size: int) -> dict[bytes, int]:
    """The textbook algorithm: recount every pair over the whole corpus before each merge."""
    seqs = [list(chunk.encode("utf-8")) for chunk in regex.findall(GPT2_SPLIT_PATTERN, text)]
    vocab = [bytes([b]) for b in range(256)]
    while len(vocab) < vocab_size:
        counts = Counter(p for s in seqs for p in zip(s, s[1:], strict=False))
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], p))
        new = len(vocab)
        vocab.append(vocab[a] + vocab[b])
        merged = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            merged.append(out)
        seqs = merged
    return {token: rank for rank, token in enumerate(vocab)}


def chunk_bytes(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> set[bytes]:
    return {chunk.encode("utf-8") for chunk in regex.findall(pattern, text)}


CORPUS = make_corpus()
RANKS = train_bpe(CORPUS, 500)
ENC = tiktoken.Encoding(
    name="t",
    pat_str=GPT2_SPLIT_PATTERN,
    mergeable_ranks=RANKS,
    special_tokens={"<|endoftext|>": len(RANKS)},
)


def test_first_merge_is_the_most_frequent_adjacent_pair():
    text = "the theatre then threw three other things at them; that is the thing"
    counts: Counter[tuple[int, int]] = Counter()
    for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):
        raw = chunk.encode("utf-8")
        counts.update(zip(raw, raw[1:], strict=False))
    (best, n1), (_, n2) = counts.most_common(2)
    assert n1 > n2  # so the check below is about counting, not about tie-breaking
    first = {rank: token for token, rank in train_bpe(text, 257).items()}[256]
    assert first == bytes(best) == b"th"


def test_ties_go_to_the_pair_of_smaller_ranks():
    # Both pairs occur once ("\n" is a chunk of its own); position in the text must not matter.
    assert max(train_bpe("cd\nab", 257).items(), key=lambda kv: kv[1]) == (b"ab", 256)


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_brute_force_algorithm(seed):
    rng = random.Random(seed)
    # Tiny alphabets give many ties and runs like "aaaa" where overlapping pairs matter.
    alphabet = ["ab", "abc", "aab ", "xyz"][seed % 4]
    text = "".join(rng.choice(alphabet + " ") for _ in range(400))
    if seed >= 4:
        text += make_corpus(seed, 150)
    assert train_bpe(text, 256 + 80) == reference_bpe(text, 256 + 80)


def test_size_ranks_and_determinism():
    assert len(RANKS) == 500
    assert train_bpe(CORPUS, 500) == RANKS
    assert sorted(RANKS.values()) == list(range(500))
    assert all(RANKS[bytes([b])] == b for b in range(256))
    # Every merged token is two earlier tokens glued together, which tiktoken needs to reach it.
    for token, rank in RANKS.items():
        if rank >= 256:
            splits = [(token[:k], token[k:]) for k in range(1, len(token))]
            assert any(
                RANKS.get(left, rank) < rank and RANKS.get(right, rank) < rank
                for left, right in splits
            ), token


def test_stops_when_no_pair_is_left():
    assert len(train_bpe("", 300)) == 256
    # "ab" twice makes "ab", then " ab" is the only pair left; nothing more to merge.
    ranks = train_bpe("ab ab", 1000)
    assert len(ranks) == 258
    assert ranks[b"ab"] == 256 and ranks[b" ab"] == 257


def test_merges_never_cross_chunk_boundaries():
    text = "hello world " * 50 + CORPUS[:3000]
    chunks = chunk_bytes(text)
    ranks = train_bpe(text, 400)
    for token in list(ranks)[256:]:
        assert any(token in chunk for chunk in chunks), token
    assert b"o w" not in ranks  # the most frequent pair across a boundary


def test_custom_pattern_is_respected():
    # One character per chunk: ASCII text has nothing to merge, CJK merges only inside a char.
    assert len(train_bpe("hello world " * 20, 1000, pattern=".")) == 256
    chars = "春眠不觉晓"
    ranks = train_bpe(chars * 5, 1000, pattern=".")
    assert {t for t in ranks if len(t) == 3} == {c.encode() for c in chars}
    assert all(len(t) <= 3 for t in ranks)


def test_vocab_size_below_256_is_rejected():
    with pytest.raises(ValueError, match="at least 256"):
        train_bpe("hello", 255)


def test_dump_and_load_round_trip():
    text = dump_ranks(RANKS)
    lines = text.split("\n")
    assert text.endswith("\n") and len(lines) == len(RANKS) + 1
    assert lines[0] == "AA== 0" and lines[255] == "/w== 255"
    assert [int(line.split()[1]) for line in lines[:-1]] == list(range(len(RANKS)))
    assert load_ranks(text) == RANKS


@pytest.mark.parametrize("bad", ["AQ==", "AQ== x", "A?== 1", "AQ== 1 2", "AQ== -1", "AA== 1"])
def test_load_rejects_a_malformed_line(bad):
    # Line 1 is fine; "AA== 1" repeats its token.
    with pytest.raises(ValueError, match="line 2"):
        load_ranks(f"AA== 0\n{bad}\n")


def test_trained_ranks_compress_the_training_text():
    n_tokens = len(ENC.encode_ordinary(CORPUS))
    assert n_tokens < len(CORPUS.encode("utf-8")) / 2


mixed_text = st.lists(
    st.one_of(st.text(), st.sampled_from(EN + ZH + EMOJI + OTHER), st.text("春花秋月😀🎉👍🏽 \n")),
    max_size=8,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(mixed_text)
def test_tiktoken_round_trips_any_text(text):
    ids = ENC.encode(text, disallowed_special=())
    assert all(0 <= i < len(RANKS) for i in ids)
    assert ENC.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(mixed_text)
def test_split_pattern_splits_like_tiktokens_gpt2_pattern(text):
    assert regex.findall(GPT2_SPLIT_PATTERN, text) == regex.findall(r50k_pat_str, text)


def test_counts_over_safely_cut_pieces_equal_the_whole_texts():
    from gptcli.data.pieces import find_cut

    pieces, rest = [], CORPUS
    while (cut := find_cut(rest[:500])) > 0:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    assert len(pieces) > 20 and "".join(pieces) == CORPUS
    assert (
        count_chunks(pieces)
        == count_chunks([CORPUS])
        == Counter(regex.findall(GPT2_SPLIT_PATTERN, CORPUS))
    )
    assert train_bpe_from_counts(count_chunks(pieces), 500) == RANKS


def test_progress_reports_the_growing_vocabulary():
    calls = []
    ranks = train_bpe_from_counts(
        count_chunks([CORPUS]), 500, lambda n, total: calls.append((n, total))
    )
    assert calls[-1] == (len(ranks), 500) == (500, 500)
    assert [n for n, _ in calls] == sorted(n for n, _ in calls) and len(calls) > 2
