import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptcli.data.tokenizers import BPETokenizer, CharTokenizer, GPT2Tokenizer, tokenizer_from_spec
from gptcli.errors import GptcliError

from ..conftest import make_text, needs_gpt2


def test_char_vocabulary_is_sorted_distinct_characters():
    tok = CharTokenizer.from_corpus(["hello ", "world\n"])
    assert tok.chars == "\n dehlorw"
    assert tok.vocab_size == 9
    assert tok.decode(tok.encode("hello world")) == "hello world"


def test_char_unknown_character_is_a_clear_error():
    tok = CharTokenizer.from_corpus(["abc"])
    with pytest.raises(GptcliError, match=r"lacks: 'z'"):
        tok.encode("abz")


def test_char_spec_round_trip_and_start():
    tok = CharTokenizer.from_corpus(["a\nb"])
    again = tokenizer_from_spec(tok.spec())
    assert again.encode("ab\n") == tok.encode("ab\n")
    assert tok.decode(tok.start_ids()) == "\n"


def test_unknown_spec():
    with pytest.raises(GptcliError, match="unknown tokenizer spec"):
        tokenizer_from_spec({"type": "sentencepiece"})
    with pytest.raises(GptcliError, match="incomplete"):
        tokenizer_from_spec({"type": "char"})


def test_gpt2_offline_failure_says_how_to_fix(monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(GptcliError, match="TIKTOKEN_CACHE_DIR"):
        GPT2Tokenizer()


@needs_gpt2
def test_gpt2_known_ids():
    tok = GPT2Tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257
    assert tok.start_ids() == [50256]
    # A literal special-token string in text stays text.
    assert 50256 not in tok.encode("<|endoftext|>")


@needs_gpt2
@settings(max_examples=150, deadline=None)
@given(st.text())
def test_gpt2_round_trips_any_text(text):
    tok = GPT2Tokenizer()
    assert tok.decode(tok.encode(text)) == text


@needs_gpt2
def test_gpt2_decode_of_a_cut_multibyte_character_does_not_crash():
    tok = GPT2Tokenizer()
    text = "好🙂"
    ids = tok.encode(text)
    assert_cuts_decode_as_far_as_whole(tok, text, ids)


def assert_cuts_decode_as_far_as_whole(tok, text, ids):
    """Each prefix of ids decodes to the text's whole characters so far, and a cut character to
    U+FFFD (no exception, nothing invented); some prefix does cut one."""
    cut_one = False
    for cut in range(len(ids) + 1):
        raw = tok.decode_bytes(ids[:cut])
        assert text.encode("utf-8").startswith(raw)
        decoded = tok.decode(ids[:cut])
        assert decoded == raw.decode("utf-8", errors="replace")
        whole = decoded.rstrip("\ufffd")
        assert text.startswith(whole) and len(decoded) - len(whole) <= len(raw)
        cut_one |= whole != decoded
    assert cut_one and tok.decode(ids) == text


# --- the trained byte-level BPE ------------------------------------------------------------

BPE_CORPUS = (make_text(300) + "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。🙂👍🏽\n" * 30) * 2
BPE = BPETokenizer.from_corpus([BPE_CORPUS], vocab_size=350)
mixed = st.lists(
    st.one_of(
        st.text(), st.text("春花秋月，。😀🎉👍🏽 \nthe cat"), st.sampled_from(["<|endoftext|>"])
    ),
    max_size=6,
).map("".join)


def test_bpe_vocabulary_and_separator():
    assert BPE.vocab_size == 350
    assert BPE.separator_id == BPE.start_ids()[0] == 349
    assert BPE.decode([349]) == "<|endoftext|>"
    # A literal special-token string in text stays text.
    assert 349 not in BPE.encode("a <|endoftext|> b")
    assert len(BPE.encode(BPE_CORPUS)) < len(BPE_CORPUS.encode()) / 2


@settings(max_examples=200, deadline=None)
@given(mixed)
def test_bpe_round_trips_any_text(text):
    ids = BPE.encode(text)
    assert all(0 <= i < BPE.vocab_size - 1 for i in ids)
    assert BPE.decode(ids) == text
    assert BPE.decode_bytes(ids) == text.encode("utf-8")
    assert BPE.encode_array(text).tolist() == ids


def test_bpe_decode_of_a_cut_multibyte_character_does_not_crash():
    text = "好🙂👍🏽"
    ids = BPE.encode(text)
    assert len(ids) > 3  # none of these is one token, so some token cuts a character
    assert_cuts_decode_as_far_as_whole(BPE, text, ids)


def test_bpe_spec_rebuilds_the_same_tokenizer():
    spec = json.loads(json.dumps(BPE.spec()))  # as meta.json and checkpoints carry it
    again = tokenizer_from_spec(spec)
    assert isinstance(again, BPETokenizer) and again.spec() == BPE.spec()
    assert again.encode(BPE_CORPUS) == BPE.encode(BPE_CORPUS)
    assert again.extra_files() == {"tokenizer.tiktoken": spec["ranks"]}


def test_bpe_bad_spec_is_a_clear_error():
    spec = BPE.spec()
    with pytest.raises(GptcliError, match="incomplete"):
        tokenizer_from_spec({k: v for k, v in spec.items() if k != "ranks"})
    with pytest.raises(GptcliError, match="corrupt"):
        tokenizer_from_spec({**spec, "ranks": "AA== 0\nnot base64!! 1\n"})


def test_bpe_options():
    with pytest.raises(GptcliError, match="--vocab-size N"):
        BPETokenizer.from_corpus(["text"])
    with pytest.raises(GptcliError, match="at least 257"):
        BPETokenizer.from_corpus(["text"], vocab_size=256)
    read = []

    def pieces():
        for piece in ["one two ", "three four ", "five six "]:
            read.append(piece)
            yield piece

    # --train-bytes: the trainer stops reading there, and cuts the last piece it reads.
    tok = BPETokenizer.from_corpus(pieces(), vocab_size=1000, train_bytes=10)
    assert read == ["one two ", "three four "]
    assert tok.vocab_size == BPETokenizer.from_corpus(["one two th"], vocab_size=1000).vocab_size


@settings(max_examples=100, deadline=None)
@given(st.text("\n dehlorw"))
def test_char_encode_array_matches_encode(text):
    tok = CharTokenizer.from_corpus(["hello ", "world\n"])
    assert tok.encode_array(text).tolist() == tok.encode(text)


def test_char_encode_array_names_unknown_characters():
    tok = CharTokenizer.from_corpus(["abc"])
    for text in ["abz", "a😀", "\x00"]:
        with pytest.raises(GptcliError, match="lacks"):
            tok.encode_array(text)


@needs_gpt2
@settings(max_examples=100, deadline=None)
@given(mixed)
def test_gpt2_encode_array_matches_encode(text):
    tok = GPT2Tokenizer()
    assert tok.encode_array(text).tolist() == tok.encode(text)
