"""Reads back what wandb wrote offline. A run file (RUN/wandb/offline-run-*/run-ID.wandb) is a
LevelDB-format log of wandb's own protobuf records: a 7-byte file header (":W&B", magic 0xBEE1,
version), then 32 KiB blocks of chunks, each with a 7-byte header (checksum, length, kind:
1 whole, 2 first, 3 middle, 4 last). wandb 0.2x's Python reader of it is gone (its Go core reads
them now), so the tests read them here, decoding with wandb's own record classes."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7
WHOLE, FIRST, LAST = 1, 2, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if pos + HEADER + length > len(data):
            break  # a chunk still being written
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:  # zero padding at the end of a block or of the file
            pos += (BLOCK - pos % BLOCK) % BLOCK
            continue
        pending = chunk if kind in (WHOLE, FIRST) else pending + chunk
        if kind in (WHOLE, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _value(item: Any) -> tuple[str, Any]:
    key = item.key or "/".join(item.nested_key)
    return key, json.loads(item.value_json)


def read_run(run_file: Path) -> dict[str, Any]:
    """One run file: its id, name, group, project, config, history rows by step, the summary as
    it ended, and its exit code (None when it never finished)."""
    run: dict[str, Any] = {"history": {}, "summary": {}, "config": {}, "exit_code": None}
    for record in records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, name=r.display_name, group=r.run_group, project=r.project)
            run["config"].update(_value(i) for i in r.config.update)
        elif kind == "config":
            run["config"].update(_value(i) for i in record.config.update)
        elif kind == "history":
            row = dict(_value(i) for i in record.history.item)
            run["history"].setdefault(row["_step"], {}).update(row)
        elif kind == "summary":
            run["summary"].update(_value(i) for i in record.summary.update)
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def read_runs(run_dir: Path, wait: float = 60.0) -> list[dict[str, Any]]:
    """Every offline run file under RUN/wandb/, oldest first (a resumed run adds one). wandb's
    finish() can return before its service has written the file out (seen once in CI: a file
    without its run record yet), so each file is read again until it holds its exit record, for
    up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
        runs = [read_run(f) for f in files]
        if (runs and all(r["exit_code"] is not None for r in runs)) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)
