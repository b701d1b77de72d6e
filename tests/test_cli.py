"""End to end through the real command line: prepare -> train -> sample, and its failures."""

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from gptcli.cli import app

from .conftest import REPO

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_config(tmp_path, data_dir, **extra):
    cfg = {
        "data": {"dir": str(data_dir)},
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
        "train": {
            "batch_size": 8,
            "max_iters": 60,
            "lr": 3e-3,
            "min_lr": 3e-4,
            "warmup_iters": 5,
            "eval_interval": 30,
            "eval_iters": 4,
            "device": "cpu",
        },
        "sample": {"max_new_tokens": 50, "temperature": 0.8},
    }
    for section, values in extra.items():
        cfg[section].update(values)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_prepare_train_sample_end_to_end(tmp_path, corpus):
    data = tmp_path / "data"
    result = invoke("prepare", "--input", corpus, "--tokenizer", "char", "--out", data)
    assert result.exit_code == 0, result.output
    assert "train tokens" in result.output

    config = write_config(tmp_path, data)
    run = tmp_path / "run"
    result = invoke("train", "--config", config, "--out", run, "--set", "train.log_interval=10")
    assert result.exit_code == 0, result.output
    assert "best val loss" in result.output
    evals = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    evals = [e["val_loss"] for e in evals if "val_loss" in e]
    assert len(evals) == 3 and evals[-1] < evals[0] - 0.5

    result = invoke(
        "sample",
        "--checkpoint",
        run,
        "--prompt",
        "The cat",
        "--max-new-tokens",
        40,
        "--num-samples",
        2,
        "--seed",
        1,
    )
    assert result.exit_code == 0, result.output
    samples = result.output.rstrip("\n").split("\n" + "-" * 40 + "\n")
    assert len(samples) == 2
    for text in samples:
        assert text.startswith("The cat") and len(text) == len("The cat") + 40
    again = invoke(
        "sample",
        "--checkpoint",
        run,
        "--prompt",
        "The cat",
        "--max-new-tokens",
        40,
        "--num-samples",
        2,
        "--seed",
        1,
    )
    assert again.output == result.output

    greedy = invoke("sample", "--checkpoint", run, "--temperature", 0, "--max-new-tokens", 10)
    assert greedy.exit_code == 0 and len(greedy.output) == 10 + 1  # no prompt, plus echo's newline


def one_error_line(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def test_bad_inputs_exit_2_with_one_line(tmp_path, char_data):
    config = write_config(tmp_path, char_data)
    one_error_line(invoke("train", "--config", config, "--set", "model.n_layers=3"), "n_layer")
    one_error_line(invoke("train", "--config", tmp_path / "missing.yaml"), "not found")
    one_error_line(
        invoke("train", "--config", write_config(tmp_path, tmp_path / "nodata")),
        "not a prepared dataset",
    )
    one_error_line(
        invoke("prepare", "--input", tmp_path / "none.txt", "--tokenizer", "char"), "none.txt"
    )
    one_error_line(invoke("sample", "--checkpoint", tmp_path / "none"), "not found")


def test_sample_errors(tmp_path, char_data):
    run = tmp_path / "run"
    config = write_config(tmp_path, char_data, train={"max_iters": 2, "eval_interval": 2})
    assert invoke("train", "--config", config, "--out", run).exit_code == 0
    one_error_line(invoke("sample", "--checkpoint", run, "--prompt", "ü"), "'ü'")
    weights = run / "step-0000002" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    one_error_line(invoke("sample", "--checkpoint", run), "corrupt")


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "gptcli", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0
    for command in ("prepare", "train", "sample"):
        assert command in out.stdout


@pytest.mark.parametrize("command", ["prepare", "train", "sample"])
def test_each_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output
