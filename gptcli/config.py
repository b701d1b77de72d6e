"""Typed run configuration: YAML (safe_load) plus `--set section.key=value` overrides.

Every problem is reported as one GptcliError line that names the key, the bad value and what
would be accepted, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from gptcli.errors import GptcliError


@dataclass
class DataConfig:
    dir: str = "data/shakespeare_char"
    order: str = "random"  # or epoch: each block-size window once a pass (training/batches.py)


@dataclass
class ModelConfig:
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    block_size: int = 256
    dropout: float = 0.0
    bias: bool = True
    position: str = "learned"
    norm: str = "layernorm"
    norm_placement: str = "pre"
    tie_embeddings: bool = True
    n_kv_head: int | None = None  # key/value heads; None: n_head (1: multi-query)
    qk_norm: str = "none"  # a norm per head on q and k, before the position rotation
    mlp: str = "standard"  # standard, or gated: swiglu, geglu
    mlp_ratio: float = 4.0
    mlp_hidden: int | None = None  # the hidden width itself; None: from mlp_ratio
    activation: str = "gelu_tanh"  # the standard MLP's
    rope_base: float = 10000.0  # position: rope
    relative_buckets: int = 32  # position: relative
    relative_max_distance: int = 128  # position: relative
    parametrization: str = "standard"  # or mup (model/mup.py): init, rates, scales by width
    mup_base_width: int | None = None  # mup: the n_embd its learning rate was tuned at

    @property
    def kv_heads(self) -> int:
        """The key/value heads the model has: n_kv_head, or one per head when it is null."""
        return self.n_kv_head or self.n_head


@dataclass
class TrainConfig:
    batch_size: int = 12
    grad_accum: int = 1
    tokens_per_step: int | None = None  # when set, decides grad_accum
    max_iters: int = 2000
    # Instead of max_iters: a run's length from its model's own count (training/budgets.py).
    flops_budget: float | None = None  # training FLOPs to spend
    tokens_per_param: float | None = None  # training tokens per parameter (Chinchilla: ~20)
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: decay over max_iters
    schedule: str = "cosine"  # after the warmup: cosine, linear, constant or wsd
    cooldown: float = 0.2  # wsd's final decay: a fraction of max_iters below 1, else steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    optimizer: str = "adamw"  # adamw, or muon: Muon for the blocks' matrices, AdamW for the rest
    muon_lr: float = 0.02  # Muon's; the defaults below are nanochat's and torch's
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_ns_steps: int = 5
    muon_weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    tensorboard: bool = False  # also write TensorBoard event files (needs gptcli[tensorboard])
    loggers: list[str] = field(default_factory=list)  # experiment trackers: mlflow
    final_eval: bool = True  # score the final checkpoint on the whole val split
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    threads: int | None = None  # CPU intra-op threads per process; None: the cores / processes
    share_cores: str = "auto"  # with other trainings on the cores: threads, turns or auto
    seed: int = 1337
    out_dir: str = "out/run"
    init_from: str | None = None  # a gptcli checkpoint or a Hugging Face GPT-2 directory


@dataclass
class SampleConfig:
    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float = 1.0
    seed: int = 1337
    num_samples: int = 1


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SECTIONS: tuple[str, ...] = tuple(f.name for f in fields(Config))
_SECTION_TYPES = typing.get_type_hints(Config)

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


# The choices config.py itself owns; the model's variant names are checked by the model package
# (gptcli.model.check_config), so that this module sits below the model and never imports it.
CHOICES: dict[str, list[str]] = {
    "train.precision": ["auto", "fp32", "bf16", "fp16"],
    "train.share_cores": ["auto", "threads", "turns"],
    "data.order": ["random", "epoch"],
    "train.schedule": ["cosine", "linear", "constant", "wsd"],
    "train.optimizer": ["adamw", "muon"],
    "model.parametrization": ["standard", "mup"],
}


# (predicate, what a valid value looks like); checked after types are known to be right.
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "model.n_layer": (lambda v: v >= 1, "an integer >= 1"),
    "model.n_head": (lambda v: v >= 1, "an integer >= 1"),
    "model.n_embd": (lambda v: v >= 1, "an integer >= 1"),
    "model.block_size": (lambda v: v >= 1, "an integer >= 1"),
    "model.dropout": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "model.mlp_ratio": (lambda v: v > 0, "a number > 0"),
    "model.n_kv_head": (lambda v: v is None or v >= 1, "an integer >= 1 or null (n_head)"),
    "model.mlp_hidden": (lambda v: v is None or v >= 1, "an integer >= 1 or null (mlp_ratio)"),
    "model.rope_base": (lambda v: v > 1, "a number > 1"),
    "model.relative_buckets": (lambda v: v >= 2, "an integer >= 2"),
    "model.relative_max_distance": (lambda v: v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.grad_accum": (lambda v: v >= 1, "an integer >= 1"),
    "train.tokens_per_step": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "train.max_iters": (lambda v: v >= 0, "an integer >= 0"),
    "train.flops_budget": (lambda v: v is None or v > 0, "a number > 0 or null"),
    "train.tokens_per_param": (lambda v: v is None or v > 0, "a number > 0 or null"),
    "train.lr": (lambda v: v > 0, "a number > 0"),
    "train.min_lr": (lambda v: v >= 0, "a number >= 0"),
    "train.warmup_iters": (lambda v: v >= 0, "an integer >= 0"),
    "train.lr_decay_iters": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "train.cooldown": (lambda v: 0 < v < 1 or (v >= 1 and float(v).is_integer()),
                       "a fraction of the run in (0, 1) or a whole number of steps >= 1"),
    "train.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "train.beta1": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.beta2": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.muon_lr": (lambda v: v > 0, "a number > 0"),
    "model.mup_base_width": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "train.muon_momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.muon_ns_steps": (lambda v: v >= 1, "an integer >= 1"),
    "train.muon_weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "train.grad_clip": (lambda v: v >= 0, "a number >= 0 (0 disables clipping)"),
    "train.eval_interval": (lambda v: v >= 1, "an integer >= 1"),
    "train.eval_iters": (lambda v: v >= 1, "an integer >= 1"),
    "train.log_interval": (lambda v: v >= 1, "an integer >= 1"),
    "train.threads": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "train.device": (lambda v: bool(_DEVICE_RE.match(v)), "auto, cpu, cuda, cuda:N or mps"),
    "train.out_dir": (lambda v: v.strip() != "", "a non-empty path"),
    "data.dir": (lambda v: v.strip() != "", "a non-empty path"),
    "sample.max_new_tokens": (lambda v: v >= 0, "an integer >= 0"),
    "sample.temperature": (lambda v: v >= 0, "a number >= 0 (0 means greedy)"),
    "sample.top_k": (lambda v: v is None or v >= 1, "an integer >= 1 or null (no top-k)"),
    "sample.top_p": (lambda v: 0 < v <= 1, "a number in (0, 1] (1 disables top-p)"),
    "sample.num_samples": (lambda v: v >= 1, "an integer >= 1"),
}

# Keys a user may reasonably type that must come from elsewhere.
_NOT_CONFIGURABLE = {
    "model.vocab_size": "vocab_size comes from the prepared dataset's meta.json; remove it",
}


def config_error(key: str, message: str) -> GptcliError:
    """The one-line error for a bad config key: `config error: KEY: MESSAGE`."""
    return GptcliError(f"config error: {key}: {message}")


def _fail(key: str, message: str) -> typing.NoReturn:
    raise config_error(key, message)


def suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}valid: {', '.join(valid)}"


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Return value as the annotated type, or fail naming the key and the expected type."""
    allowed = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    if value is None:
        if type(None) in allowed:
            return None
        _fail(key, f"must not be empty (expected {_type_name(annotation)})")
    for typ in allowed:
        if typing.get_origin(typ) is list:
            # A list of names; "a,b" on the command line (--set train.loggers=mlflow) is one too.
            items = value
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(items, list) and all(isinstance(v, str) for v in items):
                return list(items)
        if typ is bool and isinstance(value, bool):
            return value
        if typ is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if typ is float and not isinstance(value, bool):
            if isinstance(value, (int, float)):
                return float(value)
            # YAML 1.1 reads `1e-3` (no dot) as a string; accept what Python reads as a float.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        if typ is str and isinstance(value, str):
            return value
    _fail(key, f"expected {_type_name(annotation)}, got {value!r}")


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    if _is_union(annotation):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return "a list of names"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, "null" if annotation is type(None) else str(annotation))


def _build_section(name: str, raw: Any) -> Any:
    cls = _SECTION_TYPES[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(name, f"must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    values = {}
    for key, value in raw.items():
        full = f"{name}.{key}"
        if full in _NOT_CONFIGURABLE:
            _fail(full, _NOT_CONFIGURABLE[full])
        if key not in hints:
            _fail(full, f"unknown key; {suggest(str(key), valid)}")
        values[key] = _coerce(full, value, hints[key])
    return cls(**values)


def _validate(cfg: Config) -> None:
    for section in SECTIONS:
        for f in fields(getattr(cfg, section)):
            key = f"{section}.{f.name}"
            value = getattr(getattr(cfg, section), f.name)
            if key in CHOICES and value not in CHOICES[key]:
                _fail(key, f"{value!r} is not a choice; {suggest(str(value), CHOICES[key])}")
            if key in _RULES:
                ok, expected = _RULES[key]
                if not ok(value):
                    _fail(key, f"{value!r} is invalid; expected {expected}")
    m, t = cfg.model, cfg.train
    if m.n_embd % m.n_head != 0:
        _fail("model.n_embd", f"{m.n_embd} is not divisible by model.n_head={m.n_head}")
    if m.n_kv_head is not None and m.n_head % m.n_kv_head != 0:
        divisors = [str(d) for d in range(1, m.n_head + 1) if m.n_head % d == 0]
        _fail("model.n_kv_head", f"{m.n_kv_head} does not divide model.n_head={m.n_head}; "
              f"use one of {', '.join(divisors)} (1 is multi-query)")  # fmt: skip
    if m.parametrization == "mup" and m.mup_base_width is None:
        _fail("model.mup_base_width", "µP needs the width its learning rate was tuned at "
              "(e.g. 64); set model.mup_base_width")  # fmt: skip
    if t.min_lr > t.lr:
        _fail("train.min_lr", f"{t.min_lr} is larger than train.lr={t.lr}")
    if t.flops_budget is not None and t.tokens_per_param is not None:
        _fail("train.flops_budget", "and train.tokens_per_param both decide the run's length; "
              "keep one")  # fmt: skip


def config_from_dict(raw: Any, source: str = "config") -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise GptcliError(f"config error: {source} must be a mapping with sections "
                          f"{', '.join(SECTIONS)}")  # fmt: skip
    for name in raw:
        if name not in SECTIONS:
            _fail(str(name), f"unknown section; {suggest(str(name), list(SECTIONS))}")
    cfg = Config(**{name: _build_section(name, raw.get(name)) for name in SECTIONS})
    _validate(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.n_layer=2' -> (['model', 'n_layer'], 2); the value is read as YAML."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise GptcliError(
            f"bad --set {text!r}: expected section.key=value, e.g. --set model.n_layer=4"
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def load_config(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
) -> Config:
    """The config at path with `--set` overrides (text, read as YAML) and then values (already
    typed, e.g. from dedicated CLI options such as --out) applied on top."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            what = "is a directory, not a YAML file" if path.is_dir() else "not found"
            raise GptcliError(f"config file {what}: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise GptcliError(f"config file {path} is not valid YAML{where}: {problem}") from None
        except UnicodeDecodeError:
            raise GptcliError(f"config file {path} is not UTF-8 text") from None
        if not isinstance(raw, dict):
            raise GptcliError(
                f"config file {path} must hold a mapping with sections {list(SECTIONS)}"
            )
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    updates = [parse_override(text) for text in overrides]
    updates += [(key.split("."), value) for key, value in (values or {}).items()]
    for (section, key), value in updates:
        if section not in SECTIONS:
            _fail(section, f"unknown section in --set; {suggest(section, list(SECTIONS))}")
        current = raw.get(section)
        if current is None:
            current = raw[section] = {}
        if not isinstance(current, dict):
            _fail(section, "must be a mapping of keys to values")
        current[key] = value
    _check_length_keys(raw.get("train"))
    return config_from_dict(raw, source=str(path) if path else "config")


def _check_length_keys(train: Any) -> None:
    """A budget decides max_iters and the decay horizon, so neither may be given beside it; a
    null one (--set train.max_iters=null, to drop a config file's) counts as not given."""
    if not isinstance(train, dict):
        return
    if "max_iters" in train and train["max_iters"] is None:
        del train["max_iters"]  # the default, or what a budget decides
    budgets = [k for k in ("flops_budget", "tokens_per_param") if train.get(k) is not None]
    for key in ("max_iters", "lr_decay_iters"):
        if budgets and train.get(key) is not None:
            _fail(f"train.{key}", f"is decided by train.{budgets[0]}; give one of them "
                  f"(--set train.{key}=null drops the config file's)")  # fmt: skip


def reference(extra_choices: dict[str, list[str]] | None = None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, choices) for every key: the config reference's table.
    extra_choices: the names other packages own, e.g. gptcli.model.choices()."""
    choices = {**CHOICES, **(extra_choices or {})}
    rows = []
    for section in SECTIONS:
        cls = _SECTION_TYPES[section]
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            key = f"{section}.{f.name}"
            default = f.default if f.default is not MISSING else None
            if f.default_factory is not MISSING:
                default = f.default_factory()
            allowed = ", ".join(choices[key]) if key in choices else _RULES.get(key, (0, ""))[1]
            rows.append((key, _type_name(hints[f.name]), repr(default), allowed))
    return rows
