"""Corpora as people keep them: JSON Lines and gzip-compressed files, alone or mixed in a
directory, give the tokens of the same documents as plain text files."""

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.data.corpora import documents
from gptcli.data.pieces import pieces
from gptcli.data.prepare import prepare
from gptcli.errors import GptcliError

from ..conftest import make_text
from ..helpers import DOCS, TOKENIZERS, expected_tokens, jsonl, tokens


def write_forms(tmp_path):
    """The same documents as a directory of text files and in each other form."""
    forms = {name: tmp_path / name for name in ("txt", "txt.gz", "jsonl", "jsonl.gz", "mixed")}
    for form in forms.values():
        form.mkdir()
    for i, doc in enumerate(DOCS):
        (forms["txt"] / f"{i}.txt").write_text(doc, encoding="utf-8", newline="")
        (forms["txt.gz"] / f"{i}.txt.gz").write_bytes(gzip.compress(doc.encode("utf-8")))
    (forms["jsonl"] / "docs.jsonl").write_text(jsonl(DOCS), encoding="utf-8")
    # ensure_ascii: emoji and Chinese as \u escapes, surrogate pairs included.
    (forms["jsonl.gz"] / "docs.jsonl.gz").write_bytes(gzip.compress(jsonl(DOCS).encode("ascii")))
    mixed = forms["mixed"]
    (mixed / "a.txt").write_text(DOCS[0], encoding="utf-8")
    (mixed / "b.jsonl").write_text(jsonl(DOCS[1:3], ensure_ascii=False), encoding="utf-8")
    (mixed / "c.txt.gz").write_bytes(gzip.compress(DOCS[3].encode("utf-8")))
    (mixed / "d.JSONL.GZ").write_bytes(gzip.compress(jsonl(DOCS[4:]).encode("utf-8")))
    return forms


@pytest.mark.parametrize(("tokenizer", "options"), TOKENIZERS)
def test_every_form_gives_the_tokens_of_the_plain_text(tmp_path, tokenizer, options):
    forms = write_forms(tmp_path)
    results = {}
    for name, src in forms.items():
        out = tmp_path / "out" / name
        prepare(input_path=src, tokenizer=tokenizer, out_dir=out, block_size=8, **options)
        results[name] = tokens(out)
    ids, meta = results["txt"]
    assert ids == expected_tokens(meta, DOCS)
    for name, (other, other_meta) in results.items():
        assert other == ids, name
        assert other_meta["tokenizer"] == meta["tokenizer"], name


def test_sources_record_the_decompressed_text(tmp_path):
    forms = write_forms(tmp_path)
    out = prepare(input_path=forms["mixed"], tokenizer="char", out_dir=tmp_path / "d").out_dir
    sources = json.loads((out / "meta.json").read_text())["sources"]
    assert [s["path"].rsplit("/", 1)[-1] for s in sources] == [
        "a.txt", "b.jsonl", "c.txt.gz", "d.JSONL.GZ"
    ]  # fmt: skip
    text = (forms["mixed"] / "c.txt.gz").read_bytes()
    assert sources[2]["bytes"] == len(gzip.decompress(text))
    assert sources[2]["sha256"] == hashlib.sha256(gzip.decompress(text)).hexdigest()


@pytest.mark.parametrize(("tokenizer", "options"), TOKENIZERS)
def test_small_pieces_and_a_pool_change_no_token(tmp_path, tokenizer, options):
    src = tmp_path / "src"
    src.mkdir()
    # Many small documents share a piece; the long one is cut into many.
    docs = [f"doc {i}: " + make_text(i % 4, seed=i) for i in range(60)] + [make_text(300, seed=9)]
    (src / "docs.jsonl.gz").write_bytes(gzip.compress(jsonl(docs).encode("utf-8")))
    one = prepare(input_path=src, tokenizer=tokenizer, out_dir=tmp_path / "one", workers=1,
                  **options).out_dir  # fmt: skip
    two = prepare(input_path=src, tokenizer=tokenizer, out_dir=tmp_path / "two", workers=2,
                  chunk_bytes=200, **options).out_dir  # fmt: skip
    ids, meta = tokens(one)
    assert ids == expected_tokens(meta, docs)
    assert tokens(two)[0] == ids


def test_text_field_blank_lines_and_a_byte_order_mark(tmp_path):
    docs = [make_text(200, seed=4), make_text(200, seed=5)]
    lines = jsonl(docs, field="content").splitlines(keepends=True)
    path = tmp_path / "docs.jsonl"
    path.write_text("\ufeff" + lines[0] + "\n   \n" + lines[1] + "\n", encoding="utf-8")
    with pytest.raises(GptcliError, match=r'docs.jsonl:1: no "text" field; .* --text-field'):
        prepare(input_path=path, tokenizer="char", out_dir=tmp_path / "d")
    out = prepare(input_path=path, tokenizer="char", out_dir=tmp_path / "d", text_field="content")
    ids, meta = tokens(out.out_dir)
    assert ids == expected_tokens(meta, docs)
    assert meta["sources"][0]["bytes"] == path.stat().st_size


GOOD = json.dumps({"text": make_text(50)})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([GOOD, GOOD, '{"text": "unterminated'], r"docs.jsonl:3: not a JSON line \(Unterminated"),
        ([GOOD, '{"title": "no text"}'], r'docs.jsonl:2: no "text" field'),
        (['["a", "list"]'], r'docs.jsonl:1: an array, not an object with a "text" field'),
        ([GOOD, '{"text": null}'], r'docs.jsonl:2: "text" is null, not a string'),
        ([GOOD, '{"text": 42}'], r'docs.jsonl:2: "text" is a number, not a string'),
        ([GOOD, '{"text": "half \\ud83d a pair"}'], r"docs.jsonl:2: .* lone surrogate"),
    ],
)
def test_a_bad_line_is_named_by_file_and_number(tmp_path, lines, message):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(GptcliError, match=message):
        prepare(input_path=path, tokenizer="char", out_dir=tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


def test_bad_bytes_in_jsonl_and_gzip_files(tmp_path):
    bad_utf8 = tmp_path / "latin1.jsonl"
    bad_utf8.write_bytes(GOOD.encode() + b'\n{"text": "caf\xe9"}\n')
    with pytest.raises(GptcliError, match=r"latin1.jsonl:2: not UTF-8 text \(bad byte at column"):
        prepare(input_path=bad_utf8, tokenizer="char", out_dir=tmp_path / "d")
    not_gzip = tmp_path / "plain.txt.gz"
    not_gzip.write_text(make_text(50))
    with pytest.raises(GptcliError, match="plain.txt.gz is not a valid gzip file"):
        prepare(input_path=not_gzip, tokenizer="char", out_dir=tmp_path / "d")
    cut_short = tmp_path / "cut.txt.gz"
    cut_short.write_bytes(gzip.compress(make_text(300).encode())[:-40])
    with pytest.raises(GptcliError, match="cut.txt.gz is not a valid gzip file"):
        prepare(input_path=cut_short, tokenizer="char", out_dir=tmp_path / "d")
    binary = tmp_path / "bin.gz"
    binary.write_bytes(gzip.compress(b"\x00\x01\x02" * 100))
    with pytest.raises(GptcliError, match="bin.gz looks binary"):
        prepare(input_path=binary, tokenizer="char", out_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_a_bad_line_through_the_cli_is_one_line_and_exit_2(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(make_text(100))
    (src / "b.jsonl.gz").write_bytes(gzip.compress(f"{GOOD}\n{GOOD}\nnot json\n".encode()))
    args = ["prepare", "--input", str(src), "--tokenizer", "char", "--out", str(tmp_path / "d")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "b.jsonl.gz:3: not a JSON line" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_gzip_is_streamed_in_blocks_and_progress_counts_bytes_on_disk(tmp_path):
    text = make_text(3000)
    path = tmp_path / "big.txt.gz"
    path.write_bytes(gzip.compress(text.encode()))
    seen = []
    sources = []
    blocks = [list(doc) for doc in documents([path], 4096, seen.append, sources)]
    assert len(blocks) == 1 and "".join(blocks[0]) == text
    assert max(len(block) for block in blocks[0]) <= 4096
    assert sum(seen) == path.stat().st_size
    assert sources[0]["bytes"] == len(text.encode())


SEP = "\x1e"  # stands for the separator token: the documents below never hold it
documents_st = st.lists(st.text("ab \n.,'春1", max_size=40), max_size=8)


@settings(max_examples=200, deadline=None)
@given(documents_st, st.integers(1, 12), st.integers(1, 30))
def test_pieces_put_separators_exactly_between_documents(docs, block, chunk):
    as_blocks = [[doc[i : i + block] for i in range(0, len(doc), block)] for doc in docs]
    out = list(pieces(as_blocks, chunk))
    assert out and all(piece for piece in out)
    assert "".join(SEP.join(piece) for piece in out) == SEP.join(docs)


def test_ndjson_is_json_lines_and_text_field_needs_json_lines(tmp_path):
    (tmp_path / "a.ndjson").write_text('{"content": "hello world"}\n' * 100)
    result = prepare(input_path=tmp_path / "a.ndjson", tokenizer="char", text_field="content",
                     out_dir=tmp_path / "out")  # fmt: skip
    assert result.out_dir == tmp_path / "out"
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert "{" not in meta["tokenizer"]["chars"]  # the text, not the JSON around it
    (tmp_path / "plain.txt").write_text("hello world\n" * 50)
    with pytest.raises(GptcliError, match="--text-field 'content' is for JSON Lines"):
        prepare(input_path=tmp_path / "plain.txt", tokenizer="char", text_field="content",
                out_dir=tmp_path / "out2")  # fmt: skip


def test_json_lines_the_parser_refuses_are_one_line_errors(tmp_path):
    for i, line in enumerate(('{"text": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000)):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_text(line + "\n")
        with pytest.raises(GptcliError, match=r"bad\d\.jsonl:1: not a JSON line"):
            prepare(input_path=path, tokenizer="char", out_dir=tmp_path / f"o{i}")


def test_the_default_output_name_drops_every_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with gzip.open(tmp_path / "c2.jsonl.gz", "wt") as f:
        f.write('{"text": "the cat sat on the mat"}\n' * 40)
    assert prepare(input_path=tmp_path / "c2.jsonl.gz", tokenizer="char").out_dir == Path(
        "data/c2_char"
    )


@pytest.mark.slow
def test_sigterm_mid_encode_leaves_no_temporary_dataset(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    corpus = tmp_path / "big.txt"
    corpus.write_text(
        ("the cat sat on the mat and the dog ran to see her big red ball\n") * 600_000
    )
    command = [sys.executable, "-m", "gptcli", "prepare", "--input", str(corpus), "--tokenizer",
               "char", "--workers", "1", "--out", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".out.tmp-*")) and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "no dataset was written" in err
    assert list(tmp_path.glob(".out*")) == [] and not (tmp_path / "out").exists()
