import fnmatch
import hashlib
import json
import shutil
import socket

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.data import corpora
from gptcli.data import prepare as prep
from gptcli.data.bpe import load_ranks
from gptcli.data.prepare import prepare
from gptcli.data.tokenizers import tokenizer_from_spec
from gptcli.errors import GptcliError

from ..cli_checks import invoke, one_error_line
from ..conftest import REPO, make_text, needs_gpt2


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
    # The train split rounds down, as nanoGPT's int(n * 0.9) does.
    assert len(train) == int(len(data) * (1 - 0.2)) and meta["tokens"] == {
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
    # ~120 tokens: a val split of 12 holds a block of 8.
    out = prepare(input_path=src, tokenizer="gpt2", out_dir=tmp_path / "d", block_size=8).out_dir
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


SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_shakespeare_is_shipped_and_needs_no_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("prepare --dataset reached for the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    result = prepare(dataset="shakespeare", tokenizer="char", out_dir=tmp_path / "d")
    meta = json.loads((result.out_dir / "meta.json").read_text())
    assert len(meta["sources"]) == 1
    source = meta["sources"][0]
    assert source["path"].endswith("tinyshakespeare.txt.gz")
    assert (source["bytes"], source["sha256"]) == (1_115_394, SHAKESPEARE_SHA256)
    # nanoGPT's shakespeare_char: 65 characters, 1,003,854 train and 111,540 val tokens.
    assert meta["vocab_size"] == 65
    assert (result.train_tokens, result.val_tokens) == (1_003_854, 111_540)
    assert result.source_bytes == 1_115_394


def test_default_out_dir_of_a_named_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert prepare(dataset="shakespeare", tokenizer="char").out_dir.as_posix() == (
        "data/shakespeare_char"
    )


def test_packaged_copy_is_checked_by_sha256(tmp_path, monkeypatch):
    monkeypatch.setitem(corpora.DATASETS["shakespeare"], "sha256", "0" * 64)
    with pytest.raises(GptcliError, match="fails its sha256 check; reinstall gptcli"):
        prepare(dataset="shakespeare", tokenizer="char", out_dir=tmp_path / "d")
    monkeypatch.setattr(corpora, "DATA_DIR", tmp_path)  # the file is missing, or damaged
    with pytest.raises(GptcliError, match="cannot be read"):
        corpora.dataset_file("shakespeare")
    packaged = (corpora.Path(corpora.__file__).parent / "tinyshakespeare.txt.gz").read_bytes()
    (tmp_path / "tinyshakespeare.txt.gz").write_bytes(packaged[: len(packaged) // 2])
    with pytest.raises(GptcliError, match="cannot be read"):
        corpora.dataset_file("shakespeare")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinyshakespeare.txt.gz"]


def test_unknown_dataset_names_the_known_ones(tmp_path):
    with pytest.raises(GptcliError, match="unknown dataset 'wiki'; choose one of: shakespeare"):
        prepare(dataset="wiki", tokenizer="char", out_dir=tmp_path / "d")


def test_packaged_corpora_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["gptcli.data"]
    for entry in corpora.DATASETS.values():
        assert (corpora.DATA_DIR / entry["file"]).is_file()
        assert any(fnmatch.fnmatch(entry["file"], pattern) for pattern in patterns)


# --- bpe, streaming and bad input through the command line ---------------------------------

def test_bpe_prepare_train_sample_from_the_checkpoint_alone(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(600) + "春眠不觉晓，处处闻啼鸟。🙂\n" * 20, encoding="utf-8")
    data = tmp_path / "data"
    result = invoke("prepare", "--input", corpus, "--tokenizer", "bpe", "--vocab-size", 300,
                    "--out", data, "--workers", 1)  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((data / "meta.json").read_text())
    spec = meta["tokenizer"]
    assert spec["type"] == "bpe" and meta["vocab_size"] == 300 and meta["dtype"] == "uint16"
    assert spec["special_tokens"] == {"<|endoftext|>": 299}
    assert (data / "tokenizer.tiktoken").read_text() == spec["ranks"]
    assert len(load_ranks(spec["ranks"])) == 299
    tok = tokenizer_from_spec(spec)
    assert tok.spec() == spec and tok.vocab_size == 300
    ids = read_split(data, "train", meta) + read_split(data, "val", meta)
    assert tok.decode(ids) == corpus.read_text(encoding="utf-8")
    assert len(ids) < len(corpus.read_bytes()) / 2  # it did learn merges

    config = tmp_path / "tiny.yaml"
    model = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16}
    train = {"batch_size": 4, "max_iters": 4, "eval_interval": 4, "eval_iters": 1,
             "warmup_iters": 1, "device": "cpu", "out_dir": str(tmp_path / "run")}  # fmt: skip
    config.write_text(yaml.safe_dump({"data": {"dir": str(data)}, "model": model, "train": train}))
    assert invoke("train", "--config", config).exit_code == 0
    shutil.rmtree(data)  # sampling needs the checkpoint only
    result = invoke("sample", "--checkpoint", tmp_path / "run", "--prompt", "The cat 春",
                    "--max-new-tokens", 12, "--no-stream")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("The cat 春")


def test_bad_input_through_the_cli_is_one_line_and_exit_2(tmp_path, corpus):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bin.dat").write_bytes(b"text\x00\x01\x02" * 50)
    out = ["--out", tmp_path / "out"]
    one_error_line(invoke("prepare", "--input", tmp_path / "missing.txt", *out), "not found")
    one_error_line(invoke("prepare", "--input", tmp_path / "empty.txt", *out), "empty")
    one_error_line(invoke("prepare", "--input", tmp_path / "bin.dat", "--tokenizer", "char", *out),
                   "NUL")  # fmt: skip
    one_error_line(
        invoke("prepare", "--input", corpus, "--tokenizer", "char", "--block-size", 5000, *out),
        "too small", "--block-size 5000",
    )  # fmt: skip
    one_error_line(invoke("prepare", "--input", corpus, "--tokenizer", "bpe", *out), "--vocab-size")
    one_error_line(
        invoke("prepare", "--input", corpus, "--tokenizer", "char", "--vocab-size", 300, *out),
        "--vocab-size does not apply to --tokenizer char",
    )
    one_error_line(
        invoke("prepare", "--input", corpus, "--tokenizer", "bpe", "--vocab-size", 300,
               "--train-bytes", "lots", *out),
        "not a size",
    )  # fmt: skip
    one_error_line(invoke("prepare", "--input", corpus, "--workers", 0, *out), "--workers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.dat", "corpus.txt", "empty.txt"]

    assert invoke("prepare", "--input", corpus, "--tokenizer", "char", *out).exit_code == 0
    before = (tmp_path / "out" / "train.bin").read_bytes()
    one_error_line(invoke("prepare", "--input", corpus, "--tokenizer", "char", *out), "--force")
    assert (tmp_path / "out" / "train.bin").read_bytes() == before


@pytest.mark.parametrize("bad", [b"\x00\x01binary\x02" * 40, b"caf\xe9 latin-1 " * 40])
def test_failure_mid_encoding_leaves_no_trace_and_the_old_dataset_whole(tmp_path, bad):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(make_text(300))
    (src / "b.txt").write_bytes(bad)
    out = tmp_path / "d"
    prepare(input_path=src / "a.txt", tokenizer="char", out_dir=out)
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    # bpe trains on the first 1000 bytes only, so b.txt fails in the encoding pass, with a pool
    # of encoding threads running and a temporary dataset half-written.
    with pytest.raises(GptcliError, match="b.txt"):
        prepare(input_path=src, tokenizer="bpe", vocab_size=300, train_bytes=1000, out_dir=out,
                force=True, workers=2, chunk_bytes=512)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "src"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_block_size_is_what_each_split_must_exceed(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("abcdefghij" * 10)  # 100 tokens: 90 train, 10 val
    prepare(input_path=src, tokenizer="char", out_dir=tmp_path / "ok", block_size=9)
    with pytest.raises(GptcliError, match="10 val tokens .* more than --block-size 10"):
        prepare(input_path=src, tokenizer="char", out_dir=tmp_path / "no", block_size=10)


def test_progress_reports_each_stage_in_bytes(tmp_path, corpus):
    seen = {}

    def progress(stage, done, total, unit):
        seen.setdefault(stage, []).append((done, total, unit))

    prepare(input_path=corpus, tokenizer="bpe", vocab_size=300, out_dir=tmp_path / "d",
            progress=progress)  # fmt: skip
    size = corpus.stat().st_size
    assert list(seen) == ["vocabulary", "merges", "encoding"]
    assert seen["vocabulary"][-1] == seen["encoding"][-1] == (size, size, "B")
    assert seen["merges"][-1][1:] == (299, "token")


@pytest.mark.parametrize(
    ("text", "n"),
    [("123", 123), ("5M", 5_000_000), ("5 MB", 5_000_000), ("2KiB", 2048), ("1g", 10**9)],
)
def test_parse_size(text, n):
    assert prep.parse_size(text) == n


def test_parse_size_refuses_nonsense():
    with pytest.raises(GptcliError, match="not a size"):
        prep.parse_size("5 parsecs")


def test_include_and_exclude_choose_a_directory_s_files(tmp_path):
    from gptcli.data.corpora import source_files

    root = tmp_path / "lib"
    for rel in ("a.py", "pkg/b.py", "pkg/c.txt", "site-packages/d.py", "e.pyc", ".hidden/f.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n" * 50)
    names = lambda files: sorted(p.relative_to(root).as_posix() for p in files)  # noqa: E731
    assert names(source_files(root, ["*.py"], ["site-packages/*"])) == ["a.py", "pkg/b.py"]
    assert names(source_files(root, [], ["*.pyc"])) == ["a.py", "pkg/b.py", "pkg/c.txt",
                                                         "site-packages/d.py"]  # fmt: skip
    with pytest.raises(GptcliError, match="holds no files with --include/--exclude as given"):
        source_files(root, ["*.rs"])
    out = tmp_path / "data"
    done = CliRunner().invoke(app, ["prepare", "--input", str(root), "--include", "*.py",
                                    "--exclude", "site-packages/*", "--tokenizer", "char",
                                    "--out", str(out), "--block-size", "8"])  # fmt: skip
    assert done.exit_code == 0, done.output
    meta = json.loads((out / "meta.json").read_text())
    assert len(meta["sources"]) == 2 and all(s["path"].endswith(".py") for s in meta["sources"])
