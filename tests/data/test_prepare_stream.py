"""Streaming prepare: safe cuts, chunked reading, and parallel encoding equal to whole-document
encoding."""

import hashlib
import json
import random

import numpy as np
import pytest
import regex
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from gptcli.data import prepare as prep
from gptcli.data.bpe import GPT2_SPLIT_PATTERN, train_bpe
from gptcli.data.corpora import documents
from gptcli.data.pieces import find_cut, pieces
from gptcli.data.prepare import prepare
from gptcli.errors import GptcliError

from ..conftest import gpt2_available, make_text, needs_gpt2
from ..helpers import expected_tokens

# Every class the split pattern tells apart, the whitespace that only some definitions of \s
# include (\x1c, \xa0, \u3000), contractions, CRLF, combining marks, CJK and emoji.
ALPHABET = "abZ09 ''s\n\r\t.,!-\x1c\xa0\u3000\u2028e\u0301²春花，。😀🎉"
PIECES = ["'s", "'ll", " the", "  ", "\r\n", "don't", " 42", "春眠不觉晓", "👍🏽", "?!", "x'y"]
texts = st.lists(st.one_of(st.text(ALPHABET, max_size=12), st.sampled_from(PIECES)), max_size=12)
texts = texts.map("".join)

rng = random.Random(0)
CORPUS = "".join(rng.choice(PIECES + list(ALPHABET)) for _ in range(4000))
# tiktoken runs the split pattern in Rust: its tokens must not change at a cut either.
ENC = tiktoken.Encoding(
    name="t", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=train_bpe(CORPUS, 600), special_tokens={}
)
GPT2 = tiktoken.get_encoding("gpt2") if gpt2_available() else None


def cuts(text):
    """Every place find_cut picks in some prefix of text: it sees only the text up to a cut."""
    return {find_cut(text[:end]) for end in range(len(text) + 1)} - {-1}


@settings(max_examples=300, deadline=None)
@given(texts)
def test_a_cut_changes_no_chunk_and_no_token(text):
    whole = regex.findall(GPT2_SPLIT_PATTERN, text)
    for at in cuts(text):
        assert 0 < at < len(text)
        left, right = text[:at], text[at:]
        assert (
            regex.findall(GPT2_SPLIT_PATTERN, left) + regex.findall(GPT2_SPLIT_PATTERN, right)
            == whole
        )
        for enc in filter(None, [ENC, GPT2]):
            assert enc.encode_ordinary(left) + enc.encode_ordinary(right) == enc.encode_ordinary(
                text
            )


def test_cut_places():
    assert find_cut("one two\nthree") == 7  # the last place: before the newline
    assert find_cut("one  two") == 3  # not inside a run of spaces, which the next word shares
    assert find_cut("春眠不觉晓，处处闻啼鸟") == 6  # no whitespace: a change of class
    assert find_cut("it's") == 2  # never right after an apostrophe: 's is one chunk
    assert find_cut("aaaa") == find_cut("    ") == find_cut("") == -1


def read_pieces(path, chunk_bytes, info=None):
    """The pieces of one text file, each its one segment; info gets the file's source entry."""
    sources = []
    for piece in pieces(documents([path], chunk_bytes, sources=sources), chunk_bytes):
        assert len(piece) == 1
        yield piece[0]
    if info is not None:
        info.update(sources[0])


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 64, 1 << 20])
def test_read_pieces_rebuilds_the_file(tmp_path, chunk_bytes):
    text = make_text(60) + "春眠不觉晓，处处闻啼鸟。\r\n👍🏽 done\n" + "x" * 200 + " end"
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    info = {}
    pieces = list(read_pieces(path, chunk_bytes, info))
    assert "".join(pieces) == text
    data = path.read_bytes()
    assert info == {
        "path": str(path),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    # Cuts are safe ones, except in the 200 x's with none, past MAX_PIECE_CHUNKS chunks.
    start = 0
    for piece in pieces[:-1]:
        start += len(piece)
        assert find_cut(text[: start + 1], start) == start or text[start - 1 : start + 1] == "xx"
    (tmp_path / "empty.txt").write_bytes(b"")
    assert list(read_pieces(tmp_path / "empty.txt", chunk_bytes)) == [""]


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"ab cd " * 20 + b"\xff rest", 120), (b"ab \xe4\xbd\xa0 " * 9 + b"\xe4\xbd", 63)],
)
def test_bad_utf8_offset_is_the_files_across_chunks(tmp_path, data, offset):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(GptcliError, match=rf"not UTF-8 text \(bad byte at offset {offset}\)"):
        list(read_pieces(path, 7))


def write_documents(src):
    src.mkdir()
    (src / "1-en.txt").write_text(make_text(150, seed=5))
    (src / "2-zh.txt").write_text("春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。\n\n" * 30)
    (src / "3-empty.txt").write_text("")
    mixed = "Emoji 😀🎉 and CRLF\r\nlines, don't   split\r\n it's 42 ²\xa0x\u3000y\n" * 20
    (src / "4-mixed.txt").write_text(mixed + "one long line " * 60)
    return [p.read_bytes().decode("utf-8") for p in sorted(src.iterdir())]


TOKENIZERS = [
    pytest.param("gpt2", {}, marks=needs_gpt2),
    pytest.param("char", {}),
    pytest.param("bpe", {"vocab_size": 400}),
]


@pytest.mark.parametrize(("tokenizer", "options"), TOKENIZERS)
def test_parallel_chunked_encoding_equals_whole_documents(
    tmp_path, monkeypatch, tokenizer, options
):
    pools = []

    class RecordingPool(prep.ThreadPoolExecutor):
        def __init__(self, workers, *args, **kwargs):
            pools.append(workers)
            super().__init__(workers, *args, **kwargs)

    monkeypatch.setattr(prep, "ThreadPoolExecutor", RecordingPool)
    docs = write_documents(tmp_path / "src")
    whole = prepare(
        input_path=tmp_path / "src", tokenizer=tokenizer, out_dir=tmp_path / "one", workers=1,
        **options,
    )  # fmt: skip
    # 256-byte chunks: ~70 pieces, with many cuts in each file.
    chunked = prepare(
        input_path=tmp_path / "src", tokenizer=tokenizer, out_dir=tmp_path / "two", workers=2,
        chunk_bytes=256, **options,
    )  # fmt: skip
    assert pools == [2]
    names = sorted(p.name for p in whole.out_dir.iterdir())
    assert names == sorted(p.name for p in chunked.out_dir.iterdir())
    for name in names:
        assert (whole.out_dir / name).read_bytes() == (chunked.out_dir / name).read_bytes(), name

    meta = json.loads((whole.out_dir / "meta.json").read_text())
    expected = expected_tokens(meta, docs)
    ids = np.concatenate(
        [np.fromfile(whole.out_dir / f"{s}.bin", dtype=meta["dtype"]) for s in ("train", "val")]
    )
    assert ids.tolist() == expected


@pytest.mark.parametrize(("tokenizer", "options"), TOKENIZERS)
def test_each_encoding_thread_gets_a_tiktoken_encoding_of_its_own(tokenizer, options):
    from gptcli.data.tokenizers import TOKENIZERS as REGISTRY

    tok = REGISTRY[tokenizer].from_corpus([CORPUS], **options)
    own = tok.for_thread()
    if tokenizer == "char":
        assert own is tok  # nothing shared between threads to copy
        return
    # A tiktoken that stopped keeping its ranks where for_thread looks would share one Encoding
    # between threads again: still correct, but slower, so this says so.
    assert own.enc is not tok.enc and own.enc.name == tok.enc.name
    assert own.spec() == tok.spec() and own.vocab_size == tok.vocab_size
    assert own.encode(CORPUS) == tok.encode(CORPUS)
    assert own.separator_id == tok.separator_id
