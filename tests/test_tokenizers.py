import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptcli.errors import GptcliError
from gptcli.tokenizers import CharTokenizer, GPT2Tokenizer, tokenizer_from_spec

from .conftest import needs_gpt2


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
    ids = tok.encode("好🙂")
    for cut in range(len(ids) + 1):
        assert isinstance(tok.decode(ids[:cut]), str)
