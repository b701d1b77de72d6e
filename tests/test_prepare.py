import hashlib
import json

import numpy as np
import pytest

from gptcli import prepare as prep
from gptcli.errors import GptcliError
from gptcli.prepare import prepare
from gptcli.tokenizers import tokenizer_from_spec

from .conftest import make_text, needs_gpt2


def read_split(out, split, meta):
    return np.fromfile(out / f"{split}.bin", dtype=meta["dtype"]).tolist()


def test_char_dataset_layout_and_tail_split(tmp_path, corpus):
    result = prepare(input_path=corpus, tokenizer="char", out_dir=tmp_path / "d", val_fraction=0.2)
    out = result.out_dir
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint16"
    assert meta["tokenizer"]["type"] == "char"
    assert meta["vocab_size"] == len(set(corpus.read_text()))
    data = corpus.read_bytes()
    assert meta["sources"] == [
        {"path": str(corpus), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    ]
    train, val = read_split(out, "train", meta), read_split(out, "val", meta)
    assert len(val) == int(len(data) * 0.2) and meta["tokens"] == {
        "train": len(train),
        "val": len(val),
    }
    tok = tokenizer_from_spec(meta["tokenizer"])
    assert tok.decode(train + val) == corpus.read_text()  # the tail is validation, in order


@needs_gpt2
def test_directory_documents_in_sorted_order_with_separator(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_text("second doc " * 20)
    (src / "a.txt").write_text("first doc " * 20)
    (src / "sub" / "c.txt").write_text("third doc " * 20)
    (src / ".hidden").write_text("skipped")
    out = prepare(input_path=src, tokenizer="gpt2", out_dir=tmp_path / "d").out_dir
    meta = json.loads((out / "meta.json").read_text())
    ids = read_split(out, "train", meta) + read_split(out, "val", meta)
    assert [s["path"].rsplit("/", 1)[-1] for s in meta["sources"]] == ["a.txt", "b.txt", "c.txt"]
    assert ids.count(50256) == 2
    tok = tokenizer_from_spec(meta["tokenizer"])
    docs = tok.decode(ids).split("<|endoftext|>")
    assert docs == ["first doc " * 20, "second doc " * 20, "third doc " * 20]


def test_default_out_dir_is_named_after_input_and_tokenizer(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = prepare(input_path=corpus, tokenizer="char").out_dir
    assert out.as_posix() == "data/corpus_char"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"abc\x00def" * 10, "NUL"),
        (b"\xff\xfe bad bytes" * 10, "not UTF-8"),
        (b"tiny", "too small"),
    ],
)
def test_bad_corpus_is_refused_and_nothing_is_written(tmp_path, content, needle):
    src = tmp_path / "in.txt"
    src.write_bytes(content)
    with pytest.raises(GptcliError, match=needle):
        prepare(input_path=src, tokenizer="char", out_dir=tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_missing_input_and_bad_options(tmp_path, corpus):
    with pytest.raises(GptcliError, match="input not found"):
        prepare(input_path=tmp_path / "nope.txt", tokenizer="char")
    with pytest.raises(GptcliError, match="exactly one"):
        prepare(tokenizer="char")
    with pytest.raises(GptcliError, match="val-fraction"):
        prepare(input_path=corpus, tokenizer="char", val_fraction=1.0)
    with pytest.raises(GptcliError, match="unknown tokenizer"):
        prepare(input_path=corpus, tokenizer="wordpiece")


def test_existing_output_needs_force_and_is_replaced_whole(tmp_path, corpus):
    out = tmp_path / "d"
    prepare(input_path=corpus, tokenizer="char", out_dir=out)
    before = (out / "train.bin").read_bytes()
    with pytest.raises(GptcliError, match="--force"):
        prepare(input_path=corpus, tokenizer="char", out_dir=out)
    assert (out / "train.bin").read_bytes() == before
    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=1))
    prepare(input_path=other, tokenizer="char", out_dir=out, force=True)
    assert (out / "train.bin").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "d", "other.txt"]


@pytest.fixture
def local_dataset(tmp_path, monkeypatch):
    """A named dataset served from a file:// URL, with the cache in tmp_path."""
    source = tmp_path / "published.txt"
    source.write_text(make_text(seed=3))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    entry = {"url": source.as_uri(), "sha256": digest, "filename": "local.txt"}
    monkeypatch.setitem(prep.DATASETS, "local", entry)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return source


def test_named_dataset_downloads_once_then_uses_the_cache(tmp_path, local_dataset):
    prepare(dataset="local", tokenizer="char", out_dir=tmp_path / "d1")
    cached = tmp_path / "cache" / "gptcli" / "local.txt"
    assert cached.read_bytes() == local_dataset.read_bytes()
    local_dataset.unlink()  # no "network" any more: the cache must serve
    prepare(dataset="local", tokenizer="char", out_dir=tmp_path / "d2")
    assert (tmp_path / "d2" / "train.bin").read_bytes() == (
        tmp_path / "d1" / "train.bin"
    ).read_bytes()


def test_named_dataset_offline_says_how_to_pass_a_local_copy(tmp_path, local_dataset, monkeypatch):
    monkeypatch.setitem(prep.DATASETS["local"], "url", "http://127.0.0.1:9/input.txt")
    with pytest.raises(GptcliError, match="--input"):
        prepare(dataset="local", tokenizer="char", out_dir=tmp_path / "d")


def test_named_dataset_checksum_mismatch(tmp_path, local_dataset, monkeypatch):
    monkeypatch.setitem(prep.DATASETS["local"], "sha256", "0" * 64)
    with pytest.raises(GptcliError, match="sha256"):
        prepare(dataset="local", tokenizer="char", out_dir=tmp_path / "d")
    assert not (tmp_path / "cache" / "gptcli" / "local.txt").exists()


def test_shakespeare_entry_is_the_published_corpus():
    entry = prep.DATASETS["shakespeare"]
    assert entry["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert entry["url"].endswith("tinyshakespeare/input.txt")
