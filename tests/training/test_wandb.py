"""train.loggers: wandb in offline mode, its run files read back (wandb_files.py): every
metrics.jsonl record at its step, the config, the final full-split scores in the summary, the
run named by its directory and grouped by its sweep, a resumed run continuing the same run id;
refusals (no package, no API key online) come before training."""

import dataclasses
import json
import sys

import pytest
import yaml
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.errors import GptcliError
from gptcli.training import trackers
from gptcli.training.loop import train
from gptcli.training.report import read_metrics

from ..conftest import tiny_config
from .wandb_files import read_runs

pytest.importorskip("wandb", reason="wandb (the wandb extra) is not installed")
runner = CliRunner()
UNTRACKED = {"step"}  # W&B keeps the step as _step


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name))  # nothing in ~
    for name in ("WANDB_PROJECT", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def rows(run_dir):
    """metrics.jsonl as W&B should hold it: each step's records merged into one row."""
    merged = {}
    for record in read_metrics(run_dir / "metrics.jsonl"):
        merged.setdefault(record["step"], {}).update(
            {k: v for k, v in record.items() if k not in UNTRACKED and v is not None})
    return merged


def tracked(history):
    return {step: {k: v for k, v in row.items() if not k.startswith("_")}
            for step, row in history.items()}  # fmt: skip


@pytest.mark.slow
def test_wandb_mirrors_metrics_config_and_final_scores_offline(tmp_path, char_data):
    sweep = tmp_path / "positions"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")  # a sweep's run: grouped by the sweep's name
    out = sweep / "position=rope,seed=1"
    train(tiny_config(char_data, out, model={"position": "rope"},
                      train={"max_iters": 10, "loggers": ["wandb"]}))  # fmt: skip
    (run,) = read_runs(out)
    assert run["id"] == json.loads((out / trackers.IDS_FILE).read_text())["wandb"]
    assert (run["name"], run["group"], run["project"]) == ("position=rope,seed=1", "positions",
                                                           "gptcli")  # fmt: skip
    assert run["config"]["model.position"] == "rope" and run["config"]["train.max_iters"] == 10
    assert tracked(run["history"]) == rows(out)  # JSON keeps every float exactly
    full = rows(out)[10]
    for key in ("full_val_loss", "full_val_bits_per_byte"):
        assert run["summary"][key] == pytest.approx(full[key])
    assert run["exit_code"] == 0


def test_a_resumed_run_continues_its_wandb_run(tmp_path, char_data):
    out = tmp_path / "run"
    cfg = tiny_config(char_data, out, train={"max_iters": 10, "loggers": ["wandb"]})
    train(cfg)
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_iters=20))
    train(longer, resume=True)
    first, second = read_runs(out)  # offline, each start is a file; `wandb sync` joins them
    assert first["id"] == second["id"]
    both = {**tracked(first["history"]), **tracked(second["history"])}
    assert max(first["history"]) == 10 and min(second["history"]) > 10  # sent once each
    assert both == rows(out) and max(both) == 20


def test_resumed_steps_already_sent_are_not_sent_twice(tmp_path, char_data):
    out = tmp_path / "run"
    cfg = tiny_config(char_data, out, train={"max_iters": 10, "loggers": ["wandb"]})
    train(cfg)
    # As after a kill between sending step 10 and saving it: the resumed run trains 6..10 again.
    log = trackers.WandbLog(cfg, out, append=True)
    for step in (6, 10, 12):
        log.write({"step": step, "loss": 99.0})
    log.close()
    _, second = read_runs(out)
    assert sorted(second["history"]) == [12]


def test_a_run_that_raises_ends_its_wandb_run_as_failed(tmp_path, char_data):
    out = tmp_path / "run"
    log = trackers.WandbLog(tiny_config(char_data, out, train={"loggers": ["wandb"]}), out,
                            append=False)  # fmt: skip
    log.write({"step": 1, "loss": 1.0})
    try:
        raise RuntimeError("loss became nan")
    except RuntimeError:
        log.close()
    (run,) = read_runs(out)
    assert run["exit_code"] == 1 and tracked(run["history"]) == {1: {"loss": 1.0}}


def test_without_wandb_or_a_key_training_is_refused_before_it_starts(tmp_path, char_data,
                                                                    monkeypatch):  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(char_data, tmp_path / "run").to_dict()))
    args = ["train", "--config", str(config), "--set", "train.loggers=wandb"]
    monkeypatch.delenv("WANDB_MODE")  # online, and no key anywhere
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(GptcliError, match="no W&B API key; set WANDB_API_KEY"):
        trackers.check(["wandb"])
    done = runner.invoke(app, args)
    assert done.exit_code == 2 and done.output.startswith("error: train.loggers wandb: no W&B")
    monkeypatch.setitem(sys.modules, "wandb", None)  # import now fails
    done = runner.invoke(app, args)
    assert done.exit_code == 2 and done.output.count("\n") == 1
    assert done.output.startswith("error: train.loggers wandb needs the wandb package")
    assert "pip install 'gptcli[wandb]'" in done.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
