"""Experiment trackers that mirror metrics.jsonl (`train.loggers`): each record at its step, the
resolved config as parameters, the run named by its directory (a sweep names it by its variant)
and grouped by its sweep. The tracked run's id is kept in RUN/trackers.json, so a resumed run
goes on logging into the same tracked run. metrics.jsonl stays the record; a tracker is a view.

MLflow: the runs go to MLFLOW_TRACKING_URI (a server, or file:/path/mlruns with
MLFLOW_ALLOW_FILE_STORE=true), which must be set; the experiment is the sweep's directory name,
else MLFLOW_EXPERIMENT_NAME, else "gptcli".

W&B: the project is WANDB_PROJECT (else "gptcli"), the group the sweep's directory name; online
it needs an API key (WANDB_API_KEY or `wandb login`), and WANDB_MODE=offline keeps the run in
RUN/wandb/ for a later `wandb sync`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gptcli import atomic
from gptcli.config import Config
from gptcli.errors import GptcliError, first_line

IDS_FILE = "trackers.json"
SWEEP_FILE = "sweep.json"  # the sweep's own file beside its runs (study/sweep.py)
INSTALL = {"mlflow": "pip install 'gptcli[mlflow]' (or mlflow-skinny)",
           "wandb": "pip install 'gptcli[wandb]'"}  # fmt: skip


def check(names: list[str]) -> None:
    """Refuse at once, before training, an unknown tracker or one whose package is missing."""
    for name in names:
        if name not in TRACKERS:
            choices = ", ".join(TRACKERS)
            raise GptcliError(f"train.loggers: unknown logger {name!r}; choose from {choices} "
                              "(TensorBoard is train.tensorboard)")  # fmt: skip
        try:
            __import__(name)
        except ImportError as exc:
            raise GptcliError(f"train.loggers {name} needs the {name} package "
                              f"({first_line(exc)}): {INSTALL[name]}") from None  # fmt: skip
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        # MLflow's own default (a local sqlite file) needs the full mlflow package and makes a
        # database wherever training starts: say where the runs should go instead.
        raise GptcliError("train.loggers mlflow: set MLFLOW_TRACKING_URI to where the runs go: "
                          "a tracking server (http://host:5000), or a local file store "
                          "(file:/path/mlruns, with MLFLOW_ALLOW_FILE_STORE=true)")  # fmt: skip
    if "wandb" in names and not _wandb_can_log():
        raise GptcliError("train.loggers wandb: no W&B API key; set WANDB_API_KEY (or run "
                          "`wandb login`), or WANDB_MODE=offline to keep the run in RUN/wandb/ "
                          "for `wandb sync`")  # fmt: skip


def _wandb_can_log() -> bool:
    """Whether wandb.init will not stop to ask for a key: offline, or a key it will find."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    host = os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return host.split(":")[0] in netrc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def open_trackers(cfg: Config, out_dir: Path, append: bool) -> list:
    return [TRACKERS[name](cfg, out_dir, append) for name in dict.fromkeys(cfg.train.loggers)]


def group_of(out_dir: Path) -> str | None:
    """The sweep a run belongs to: its parent directory, when that holds a sweep.json."""
    parent = Path(out_dir).resolve().parent
    return parent.name if (parent / SWEEP_FILE).is_file() else None


def flat_config(cfg: Config) -> dict[str, Any]:
    return {f"{section}.{k}": v for section, values in asdict(cfg).items()
            for k, v in values.items()}  # fmt: skip


def stored_id(out_dir: Path, name: str) -> str | None:
    try:
        return json.loads((Path(out_dir) / IDS_FILE).read_text(encoding="utf-8")).get(name)
    except (OSError, ValueError, AttributeError):
        return None


def store_id(out_dir: Path, name: str, run_id: str) -> None:
    path = Path(out_dir) / IDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        ids = {}
    atomic.write_json(path, {**(ids if isinstance(ids, dict) else {}), name: run_id})


class MLflowLog:
    """Every numeric field of each record as an MLflow metric at the record's step; params are
    the flattened config; a resumed run reopens its MLflow run and skips the steps it already
    holds (a resumed run retrains them bit for bit). A store that fails during training is
    warned about once and then left alone: metrics.jsonl is the record, not the tracker."""

    def __init__(self, cfg: Config, out_dir: Path, append: bool):
        from mlflow.exceptions import MlflowException

        self.done_step = -1
        try:
            self._open(cfg, out_dir, append)
        except (MlflowException, OSError) as exc:
            raise GptcliError(f"train.loggers mlflow: {first_line(exc)}") from None

    def _open(self, cfg: Config, out_dir: Path, append: bool) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient()
        previous = stored_id(out_dir, "mlflow") if append else None
        if previous is not None:
            self.run_id = previous
            self.client.update_run(previous, status="RUNNING")
            logged = self.client.get_metric_history(previous, "loss")
            self.done_step = max((m.step for m in logged), default=-1)
            return
        experiment = group_of(out_dir) or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "gptcli"
        where = Path(out_dir).resolve()
        run = self.client.create_run(self._experiment(experiment), run_name=where.name,
                                     tags={"gptcli.run_dir": str(where)})  # fmt: skip
        self.run_id = run.info.run_id
        store_id(out_dir, "mlflow", self.run_id)
        params = [Param(k, str(v)) for k, v in flat_config(cfg).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another run of the sweep made it first
            return self.client.get_experiment_by_name(name).experiment_id

    def write(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        if self.client is None or record["step"] <= self.done_step:
            return
        now = int(time.time() * 1000)
        numbers = {k: v for k, v in record.items() if k != "step" and _number(v)}
        metrics = [Metric(k, float(v), now, record["step"]) for k, v in numbers.items()]
        if metrics:
            self._call(self.client.log_batch, self.run_id, metrics=metrics)

    def close(self) -> None:
        if self.client is not None:
            # Closed while an exception unwinds training: the run did not finish.
            kind = sys.exc_info()[0]
            status = ("FINISHED" if kind is None else
                      "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")  # fmt: skip
            self._call(self.client.set_terminated, self.run_id, status)

    def _call(self, method, *args, **kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception as exc:  # a tracker never stops training  # noqa: BLE001
            warnings.warn(f"train.loggers mlflow: {first_line(exc)}; no more metrics go to "
                          "MLflow in this run (metrics.jsonl has them all)", stacklevel=2)
            self.client = None


class WandbLog:
    """Each record's numbers at its step; the flattened config; the final full-split scores in
    the summary. A resumed run reopens its W&B run by id and skips the steps it sent before
    (W&B refuses a step lower than one it has), kept in RUN/trackers.json when it closes."""

    def __init__(self, cfg: Config, out_dir: Path, append: bool):
        import wandb

        previous = stored_id(out_dir, "wandb") if append else None
        self.sent_before = int(stored_id(out_dir, "wandb_step") or -1) if previous else -1
        self.last_step = self.sent_before
        where = Path(out_dir).resolve()
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "gptcli", name=where.name,
                group=group_of(out_dir), config=flat_config(cfg), dir=str(where),
                id=previous, resume="allow" if previous else None, reinit="create_new",
                settings=wandb.Settings(console="off", silent=True),
            )  # fmt: skip
        except Exception as exc:  # wandb.errors.* and whatever its service raises
            raise GptcliError(f"train.loggers wandb: {first_line(exc)}") from None
        self.out_dir = out_dir
        store_id(out_dir, "wandb", self.run.id)

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        if self.run is None or step <= self.sent_before:
            return
        numbers = {k: v for k, v in record.items() if k != "step" and _number(v)}
        try:
            self.run.log(numbers, step=step)
            for key in (k for k in numbers if k.startswith("full_")):
                self.run.summary[key] = numbers[key]
        except Exception as exc:  # a tracker never stops training  # noqa: BLE001
            warnings.warn(f"train.loggers wandb: {first_line(exc)}; no more metrics go to "
                          "W&B in this run (metrics.jsonl has them all)", stacklevel=2)
            self.run = None
            return
        self.last_step = step

    def close(self) -> None:
        if self.run is None:
            return
        store_id(self.out_dir, "wandb_step", str(self.last_step))
        failed = sys.exc_info()[0] is not None  # closed while an exception unwinds training
        with contextlib.suppress(Exception):
            self.run.finish(exit_code=1 if failed else 0)
        self.run = None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


TRACKERS = {"mlflow": MLflowLog, "wandb": WandbLog}
