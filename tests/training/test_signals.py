"""SIGINT and SIGTERM: finish the step, save a checkpoint, exit with one line on how to resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from gptcli import checkpoint
from gptcli.training.loop import train
from gptcli.training.signals import StopSignal

from ..conftest import REPO, tiny_config


def wait_for_steps(proc, metrics, timeout=60.0):
    """Until metrics.jsonl holds a training-step record (so the signal handlers are in place)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if metrics.is_file() and any('"loss"' in line for line in metrics.open()):
            return
        time.sleep(0.05)
    raise AssertionError(f"no training step within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_signal_saves_the_step_and_resume_continues(tmp_path, char_data, sig, code):
    # Far more steps than the test waits for; no periodic checkpoint, so the signal makes it.
    keys = {"max_iters": 10**6, "lr_decay_iters": 100, "eval_interval": 10**6, "log_interval": 1}
    cfg = tiny_config(char_data, tmp_path / "run", train=keys)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptcli", "train", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job would ignore SIGINT, which gptcli then respects.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for_steps(proc, run / "metrics.jsonl")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err
    pointer = checkpoint.read_pointer(run)
    step = checkpoint.load(run, "latest").step
    assert step >= 1 and pointer["latest"] == checkpoint.step_dir_name(step)
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
    assert step >= logged[-1]
    last = err.strip().splitlines()[-1]
    assert last == (
        f"stopped by {sig.name} at step {step}; saved {run / checkpoint.step_dir_name(step)}; "
        f"resume with: gptcli train --config {config} --resume"
    )
    assert "step 1/1000000: loss" in err and "ETA" not in err  # plain lines off a terminal

    result = train(tiny_config(char_data, run, train={**keys, "max_iters": step + 3}), resume=True)
    assert result.steps == 3 and result.interrupted is None
    assert checkpoint.load(run, "latest").step == step + 3


@pytest.fixture
def python_sigint():
    # Python's own SIGINT handler, even where pytest runs as a background job that ignores it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_stop_signal_sets_a_flag_then_escalates_and_restores(tmp_path, char_data, python_sigint):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignal(escalate=True) as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C gets Python's default
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

    train(tiny_config(char_data, tmp_path / "run", train={"max_iters": 2}))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_mid_run_stops_in_process(tmp_path, char_data, monkeypatch):
    # The library alone: the step the signal lands in is finished and saved, never a half step.
    from gptcli.training import loop as train_module

    real_lr_at = train_module.lr_at

    def lr_at(step, tc):
        if step == 6:
            # Unhandled, SIGTERM would end the test session: fail instead.
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "no handler"
            signal.raise_signal(signal.SIGTERM)
        return real_lr_at(step, tc)

    monkeypatch.setattr(train_module, "lr_at", lr_at)
    run = tmp_path / "run"
    result = train(tiny_config(char_data, run, train={"max_iters": 40, "eval_interval": 5}))
    assert result.interrupted == signal.SIGTERM and result.step == 7 and result.steps == 7
    assert result.checkpoint == run / "step-0000007"
    pointer = checkpoint.read_pointer(run)
    assert (pointer["latest"], pointer["best"]) == ("step-0000007", "step-0000005")
    state = checkpoint.load(run, "latest").trainer_state()
    assert state["step"] == 7 and torch.is_tensor(state["rng"][0]["torch"])
