"""train.loggers: MLflow gets every metrics.jsonl record at its step, the config as params, the
run named and grouped, a resumed run continues its tracked run; refusals come before training.
MLflow runs here against a local file store, read back through mlflow's own client."""

import dataclasses
import json
import sys

import pytest
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.errors import GptcliError
from gptcli.training import trackers
from gptcli.training.loop import train
from gptcli.training.report import read_metrics

from ..conftest import tiny_config

mlflow = pytest.importorskip("mlflow", reason="mlflow (the mlflow extra) is not installed")
runner = CliRunner()


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local file store, no server
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return mlflow.MlflowClient(tracking_uri=uri)


def history(client, run_id, key):
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def logged(run_dir, key):
    return {r["step"]: r[key] for r in read_metrics(run_dir / "metrics.jsonl")
            if r.get(key) is not None}  # fmt: skip


def test_mlflow_mirrors_metrics_params_and_final_scores(tmp_path, char_data, store):
    out = tmp_path / "position=rope,seed=1"
    cfg = tiny_config(char_data, out, model={"position": "rope"},
                      train={"max_iters": 10, "loggers": ["mlflow"]})  # fmt: skip
    train(cfg)
    run_id = json.loads((out / trackers.IDS_FILE).read_text())["mlflow"]
    run = store.get_run(run_id)
    assert run.info.run_name == "position=rope,seed=1" and run.info.status == "FINISHED"
    assert store.get_experiment(run.info.experiment_id).name == "gptcli"
    params = run.data.params
    assert params["model.position"] == "rope" and params["train.max_iters"] == "10"
    for key in ("loss", "lr", "val_loss", "train_loss", "tokens_per_sec", "full_val_loss"):
        assert history(store, run_id, key) == pytest.approx(logged(out, key)), key
    full = logged(out, "full_val_loss")
    assert run.data.metrics["full_val_loss"] == pytest.approx(full[10])


def test_a_resumed_run_continues_its_tracked_run(tmp_path, char_data, store):
    out = tmp_path / "run"
    cfg = tiny_config(char_data, out, train={"max_iters": 10, "loggers": ["mlflow"]})
    train(cfg)
    first = json.loads((out / trackers.IDS_FILE).read_text())["mlflow"]
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_iters=20))
    train(longer, resume=True)
    assert json.loads((out / trackers.IDS_FILE).read_text())["mlflow"] == first
    assert len(store.search_runs([store.get_run(first).info.experiment_id])) == 1
    losses = history(store, first, "loss")
    assert losses == pytest.approx(logged(out, "loss")) and max(losses) == 20
    assert store.get_run(first).info.status == "FINISHED"


def test_a_sweeps_runs_share_an_experiment_named_by_the_sweep(tmp_path, char_data, store):
    sweep = tmp_path / "positions"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    for name in ("position=learned", "position=rope"):
        position = name.split("=")[1]
        train(tiny_config(char_data, sweep / name, model={"position": position},
                          train={"max_iters": 4, "loggers": ["mlflow"]}))  # fmt: skip
    experiment = store.get_experiment_by_name("positions")
    names = sorted(r.info.run_name for r in store.search_runs([experiment.experiment_id]))
    assert names == ["position=learned", "position=rope"]


def test_unknown_or_missing_trackers_are_refused_before_training(tmp_path, char_data,
                                                                 monkeypatch):  # fmt: skip
    with pytest.raises(GptcliError, match="unknown logger 'wandbx'; choose from mlflow, wandb"):
        trackers.check(["wandbx"])
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import now fails
    config = tmp_path / "c.yaml"
    cfg = tiny_config(char_data, tmp_path / "run")
    import yaml

    config.write_text(yaml.safe_dump(cfg.to_dict()))
    done = runner.invoke(app, ["train", "--config", str(config), "--set", "train.loggers=mlflow"])
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: train.loggers mlflow needs")
    assert "pip install 'gptcli[mlflow]'" in lines[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_without_a_tracking_uri_training_is_refused_with_what_to_set(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(GptcliError, match="set MLFLOW_TRACKING_URI to where the runs go"):
        trackers.check(["mlflow"])


def test_resumed_steps_already_tracked_are_not_logged_twice(tmp_path, char_data, store):
    out = tmp_path / "run"
    cfg = tiny_config(char_data, out, train={"max_iters": 10, "loggers": ["mlflow"]})
    train(cfg)
    # As after a kill between logging step 10 and saving it: the resumed run logs 6..10 again.
    log = trackers.MLflowLog(cfg, out, append=True)
    for step in (6, 10, 12):
        log.write({"step": step, "loss": 99.0})
    log.close()
    steps = [m.step for m in store.get_metric_history(log.run_id, "loss")]
    assert sorted(steps) == sorted(set(steps)) and 12 in steps
    assert history(store, log.run_id, "loss")[10] != 99.0


def test_a_failing_store_is_warned_about_once_and_training_goes_on(tmp_path, char_data, store):
    out = tmp_path / "run"
    cfg = tiny_config(char_data, out, train={"max_iters": 4, "loggers": ["mlflow"]})
    log = trackers.MLflowLog(cfg, out, append=False)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("tracking server went away")

    log.client.log_batch = refuse
    with pytest.warns(UserWarning, match="tracking server went away; no more metrics"):
        log.write({"step": 1, "loss": 1.0})
    log.write({"step": 2, "loss": 0.9})  # silently skipped now
    log.close()
    assert len(calls) == 1


def test_a_run_that_raises_is_marked_failed(tmp_path, char_data, store):
    out = tmp_path / "run"
    cfg = tiny_config(char_data, out, train={"max_iters": 4, "loggers": ["mlflow"]})
    log = trackers.MLflowLog(cfg, out, append=False)
    try:
        raise RuntimeError("loss became nan")
    except RuntimeError:
        log.close()
    assert store.get_run(log.run_id).info.status == "FAILED"


@pytest.mark.slow
def test_under_torchrun_a_refusing_store_stops_every_process(tmp_path, char_data, monkeypatch):
    import os
    import subprocess

    import yaml

    from ..conftest import REPO

    config = tmp_path / "c.yaml"
    cfg = tiny_config(char_data, tmp_path / "run", train={"loggers": ["mlflow"]})
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    # A file store without MLflow 3's opt-in: the store refuses as the tracker opens.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": (tmp_path / "m").as_uri()}
    env.pop("MLFLOW_ALLOW_FILE_STORE", None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*torchrun, "-m", "gptcli", "train", "--config", str(config)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("error: train.loggers mlflow:") == 2  # each rank says it, then ends
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
