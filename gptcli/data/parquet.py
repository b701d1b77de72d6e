"""Parquet corpora (FineWeb, and every Hugging Face dataset saved to disk): one document per row,
the text in one string column, read through pyarrow a row group at a time so memory stays
bounded by a row group (what the file's writer chose), not the file."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gptcli.errors import GptcliError, first_line

SUFFIXES = (".parquet", ".pq")
BATCH_ROWS = 1024  # rows converted to Python strings at a time
INSTALL = "reading Parquet needs pyarrow: pip install 'gptcli[parquet]' (or pip install pyarrow)"


def is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def require_pyarrow() -> None:
    """Refuse at once, before anything is written, when pyarrow is missing."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise GptcliError(INSTALL) from None


def parquet_documents(
    path: Path, block: int, field: str, info: dict[str, Any], on_bytes: Callable[[int], None] | None
) -> Iterator[Iterator[str]]:
    """Each row's text_field as one document, in blocks; info gets the file's size and sha256
    (of the file's bytes: Parquet is compressed binary, with no text to hash)."""
    import pyarrow as pa

    opened = _open(path, field)
    size = path.stat().st_size
    rows, done_bytes = max(opened.metadata.num_rows, 1), 0
    row = 0
    try:
        for column in _batches(opened, field):
            if column.null_count:
                first = next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
                raise GptcliError(f"{path}: row {row + first + 1}: column '{field}' is null, "
                                  "not a string; drop or fill the empty rows")  # fmt: skip
            texts = _texts(column, path, field, row)
            row += len(column)
            del column  # before the next row group is read: one in memory at a time
            for text in texts:
                yield (text[i : i + block] for i in range(0, len(text), block))
            if on_bytes is not None:  # progress in file bytes, by the share of rows read
                now = size * row // rows
                on_bytes(now - done_bytes)
                done_bytes = now
    except (pa.ArrowException, OSError) as exc:
        raise GptcliError(f"{path} cannot be read as Parquet ({first_line(exc)})") from None
    finally:
        opened.close()
    if on_bytes is not None and size > done_bytes:  # a file of no rows is read all the same
        on_bytes(size - done_bytes)
    info["bytes"] = size
    info["sha256"] = _file_sha256(path)


def _texts(column, path: Path, field: str, row: int) -> list[str]:
    """The batch's strings; Arrow does not check UTF-8 as it reads, so a bad value shows here."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        for i in range(len(column)):
            try:
                column[i].as_py()
            except UnicodeDecodeError:
                raise GptcliError(f"{path}: row {row + i + 1}: column '{field}' is not UTF-8 "
                                  "text; convert it to UTF-8") from None  # fmt: skip
        raise


def _batches(opened, field: str):
    """The column a row group at a time (one thread, no read-ahead: iter_batches reads whole
    files ahead), handed on BATCH_ROWS rows at a time."""
    for group in range(opened.num_row_groups):
        column = opened.read_row_group(group, columns=[field], use_threads=False).column(0)
        for start in range(0, len(column), BATCH_ROWS):
            yield column.slice(start, BATCH_ROWS)
        del column


def _open(path: Path, field: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        opened = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise GptcliError(f"{path} is not a readable Parquet file ({first_line(exc)})") from None
    schema = opened.schema_arrow
    found = schema.get_all_field_indices(field)
    if len(found) != 1:
        opened.close()
        if found:
            raise GptcliError(f"{path}: {len(found)} columns are named '{field}'; "
                              "write the file with one")  # fmt: skip
        raise GptcliError(f"{path}: no column '{field}' (columns: {', '.join(schema.names)}); "
                          "name the text's column with --text-field")  # fmt: skip
    kind = schema.field(found[0]).type
    if not _strings(pa, kind):
        opened.close()
        raise GptcliError(f"{path}: column '{field}' holds {kind}, not strings; name the text's "
                          "column with --text-field")  # fmt: skip
    return opened


def _strings(pa, kind) -> bool:
    """A string column: plain, large, a string view, or dictionary-encoded strings (a pandas
    categorical), all of which read back as Python strings."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    string_view = getattr(pa.types, "is_string_view", lambda _: False)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or string_view(kind)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
