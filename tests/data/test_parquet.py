"""Parquet corpora: the same documents give the same tokens as JSON Lines, memory stays bounded by
a batch of rows, and every kind of bad file is one line naming the file, column and row."""

import hashlib
import sys

import pytest
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.data.corpora import documents
from gptcli.data.prepare import prepare
from gptcli.errors import GptcliError

from ..helpers import DOCS, TOKENIZERS, expected_tokens, jsonl, tokens

pa = pytest.importorskip("pyarrow", reason="pyarrow (the parquet extra) is not installed")
pq = pytest.importorskip("pyarrow.parquet")
runner = CliRunner()


def write_parquet(path, docs, field="text", row_group_size=2, **columns):
    table = pa.table({"id": list(range(len(docs))), field: docs, **columns})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize(("tokenizer", "options"), TOKENIZERS)
def test_parquet_gives_the_tokens_of_the_same_documents_as_json_lines(tmp_path, tokenizer,
                                                                      options):  # fmt: skip
    (tmp_path / "docs.jsonl").write_text(jsonl(DOCS, field="content"), encoding="utf-8")
    write_parquet(tmp_path / "docs.parquet", DOCS, field="content")
    results = {}
    for name in ("docs.jsonl", "docs.parquet"):
        out = tmp_path / f"out-{name}"
        prepare(input_path=tmp_path / name, tokenizer=tokenizer, out_dir=out, block_size=8,
                text_field="content", **options)  # fmt: skip
        results[name] = tokens(out)
    ids, meta = results["docs.jsonl"]
    assert ids == expected_tokens(meta, DOCS)
    assert results["docs.parquet"][0] == ids
    assert results["docs.parquet"][1]["tokenizer"] == meta["tokenizer"]


def test_a_directory_mixes_parquet_with_other_files_and_sources_hash_the_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(DOCS[0], encoding="utf-8")
    part = write_parquet(src / "b.parquet", DOCS[1:], row_group_size=1)
    done = runner.invoke(app, ["prepare", "--input", str(src), "--tokenizer", "char", "--out",
                               str(tmp_path / "d"), "--block-size", "8"])  # fmt: skip
    assert done.exit_code == 0, done.output
    ids, meta = tokens(tmp_path / "d")
    assert ids == expected_tokens(meta, DOCS)
    parquet_source = meta["sources"][1]
    assert parquet_source["path"].endswith("b.parquet")
    assert parquet_source["sha256"] == hashlib.sha256(part.read_bytes()).hexdigest()
    assert parquet_source["bytes"] == part.stat().st_size


def test_memory_is_bounded_by_a_batch_of_rows_not_the_file(tmp_path):
    docs = [f"document {i} " + "x" * 2000 for i in range(4000)]  # 8 MB of text
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": docs}), path, row_group_size=250, compression="none")
    group_bytes = 250 * len(docs[0])
    del docs
    before, peak, total = pa.total_allocated_bytes(), 0, 0
    for doc in documents([path]):
        total += sum(len(block) for block in doc)
        peak = max(peak, pa.total_allocated_bytes() - before)
    assert total > 8_000_000
    # arrow holds one row group at a time (read and decoded: about twice its text), never the file
    assert peak <= 3 * group_bytes and peak < total / 4, (peak, group_bytes, total)


def bad_prepare(tmp_path, path, *extra):
    out = tmp_path / "never"
    done = runner.invoke(app, ["prepare", "--input", str(path), "--tokenizer", "char", "--out",
                               str(out), *extra])  # fmt: skip
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.output
    assert not out.exists() and not list(tmp_path.glob(".never*"))
    return lines[0]


def test_bad_files_are_one_line_naming_file_column_and_row(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", ["one", "two"], field="body")
    line = bad_prepare(tmp_path, path)
    assert "a.parquet: no column 'text' (columns: id, body)" in line and "--text-field" in line
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), ints)
    assert "column 'text' holds int64, not strings" in bad_prepare(tmp_path, ints)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c", None, "e"]}), nulls, row_group_size=2)
    assert "nulls.parquet: row 4: column 'text' is null" in bad_prepare(tmp_path, nulls)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not parquet at all" * 10)
    assert "junk.parquet is not a readable Parquet file" in bad_prepare(tmp_path, junk)
    cut = tmp_path / "cut.parquet"
    whole = write_parquet(tmp_path / "whole.parquet", DOCS * 20).read_bytes()
    cut.write_bytes(whole[: len(whole) // 2] + whole[-8:])  # footer kept, pages cut off
    assert "cut.parquet" in bad_prepare(tmp_path, cut)


def test_without_pyarrow_prepare_says_what_to_install(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "a.parquet", ["one"])
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import now fails
    with pytest.raises(GptcliError, match=r"reading Parquet needs pyarrow: pip install"):
        prepare(input_path=path, tokenizer="char", out_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_a_dictionary_encoded_column_reads_as_its_strings(tmp_path):
    docs = ["a cat", "a dog", "a cat", "the end"]
    plain = write_parquet(tmp_path / "plain.parquet", docs)
    coded = tmp_path / "coded.parquet"
    pq.write_table(pa.table({"text": pa.array(docs).dictionary_encode()}), coded)
    assert pq.ParquetFile(coded).schema_arrow.field("text").type.value_type == pa.string()
    out = {}
    for path in (plain, coded):
        out[path.stem] = tokens(prepare(input_path=path, tokenizer="char", block_size=2,
                                        out_dir=tmp_path / path.stem).out_dir)[0]  # fmt: skip
    assert out["coded"] == out["plain"]


def test_bad_utf8_duplicate_columns_and_an_empty_file(tmp_path):
    raw = pa.array([b"fine", b"also fine", b"bad \xff byte"], pa.binary()).view(pa.string())
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": raw}), bad, row_group_size=2)
    assert "bad.parquet: row 3: column 'text' is not UTF-8" in bad_prepare(tmp_path, bad)
    twice = tmp_path / "twice.parquet"
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"])
    pq.write_table(table, twice)
    assert "twice.parquet: 2 columns are named 'text'" in bad_prepare(tmp_path, twice)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    heard = []
    assert list(documents([empty], on_bytes=heard.append)) == []
    assert sum(heard) == empty.stat().st_size  # progress reaches the end of a file of no rows
