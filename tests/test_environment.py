"""environment.json: where each start of a run was trained, read back by gptcli report."""

import dataclasses
import json
import platform

import torch

from gptcli import environment
from gptcli.training.loop import train

from .conftest import tiny_config


def test_each_start_of_a_run_records_its_versions_and_machine(tmp_path, char_data):
    out = tmp_path / "run"
    cfg = tiny_config(char_data, out, train={"max_iters": 4})
    train(cfg)
    [first] = json.loads((out / environment.FILE).read_text())
    assert first["step"] == 0 and first["torch"] == torch.__version__
    assert first["python"] == platform.python_version() and first["device"] == "cpu"
    assert first["precision"] == "fp32" and first["processes"] == 1 and first["cores"] >= 1
    assert first["cpu"]
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_iters=6))
    train(longer, resume=True)
    entries = environment.read(out)
    assert [e["step"] for e in entries] == [0, 4]
    train(cfg, force=True)  # a fresh run in the same directory starts the file over
    assert [e["step"] for e in environment.read(out)] == [0]


def test_a_missing_or_broken_file_reads_as_nothing(tmp_path):
    assert environment.read(tmp_path) == []
    (tmp_path / environment.FILE).write_text("{not json")
    assert environment.read(tmp_path) == []
