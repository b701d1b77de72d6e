"""A sweep's grid: a base config, overrides for every run, and the keys that vary (times seeds).

The grid is the cartesian product of every varied key's values and the seeds. Each combination
is named by what varies (`position=rope,norm=rmsnorm,seed=1338`), which is also its run
directory under the sweep's out directory. A grid file says the same as the command line:

    config: configs/shakespeare-char-cpu.yaml
    out: out/sweeps/positions
    set: {train.max_iters: 1000}
    vary: {model.position: [learned, rope, alibi]}
    seeds: [1337, 1338]

A grid file may give a ladder instead of vary: rungs in order, each adding its keys to all the
rungs before it (`rung=2-rmsnorm,seed=1337` has rung 1's and rung 2's keys):

    ladder:
      - {name: gpt2}
      - {name: rope, set: {model.position: rope}}
      - {name: rmsnorm, set: {model.norm: rmsnorm}}

And, crossed with either, named model sizes (groups of keys moved together) and compute budgets
(train.flops_budget: each run's length from its own FLOPs a token, gptcli/compute.py):

    sizes:
      s: {model.n_layer: 2, model.n_head: 2, model.n_embd: 64}
      m: {model.n_layer: 4, model.n_head: 4, model.n_embd: 128, train.lr: 6.0e-4}
    budgets: [1.0e12, 3.0e12, 1.0e13]

A run is then named `size=m,budget=3e+12,rung=1-rope,seed=1337`. A budget may name the sizes it
runs, so that each budget's sizes bracket its own optimum (`{flops: 1.0e13, sizes: [m, l]}`);
a plain number runs every size. A ladder and vary may also be given together: each rung at each
combination of the varied values (a learning-rate sweep of several blocks).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gptcli.compute import micro_batches
from gptcli.config import Config, load_config, suggest
from gptcli.data.dataset import TokenDataset
from gptcli.errors import GptcliError
from gptcli.model import check_config
from gptcli.training.budgets import resolve_length

GRID_KEYS = ("config", "out", "set", "vary", "ladder", "sizes", "budgets", "seeds")


@dataclass
class Grid:
    config: Path
    out: Path
    sets: list[str] = field(default_factory=list)  # `section.key=value`, read as YAML
    vary: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None  # None: the config's own seed
    ladder: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (rung, its keys)
    sizes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (size, its keys)
    budgets: list[float] = field(default_factory=list)  # train.flops_budget of each
    budget_sizes: dict[float, list[str]] = field(default_factory=dict)  # where not every size

    def to_dict(self) -> dict[str, Any]:
        budgets = [{"flops": b, "sizes": self.budget_sizes[b]} if b in self.budget_sizes else b
                   for b in self.budgets]  # fmt: skip
        return {"config": str(self.config), "out": str(self.out), "set": self.sets,
                "vary": self.vary, "seeds": self.seeds,
                "ladder": [{"name": n, "set": keys} for n, keys in self.ladder],
                "sizes": dict(self.sizes), "budgets": budgets}  # fmt: skip


@dataclass
class Combo:
    name: str  # what varies, e.g. position=rope,seed=1338: the run's directory name
    overrides: dict[str, Any]  # varied key -> value (train.seed included when seeds are given)
    config: Config
    size: str | None = None  # the grid's named size ...
    size_keys: list[str] = field(default_factory=list)  # ... and the keys it set

    def run_dir(self, out: Path) -> Path:
        return out / self.name


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """'model.position=learned,rope' -> ('model.position', ['learned', 'rope'])."""
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",")]
    if not sep or not re.fullmatch(r"\w+\.\w+", key.strip()) or not all(items):
        raise GptcliError(
            f"bad --vary {text!r}: expected section.key=v1,v2,..., e.g. "
            "--vary model.position=learned,rope"
        )
    return key.strip(), [_yaml_value(v) for v in items]


def _yaml_value(text: str) -> Any:
    """A value as --set reads it: YAML where it parses, else the text itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise GptcliError(f"--seeds must be integers separated by commas, got {text!r}") from None


def load_grid(path: Path) -> Grid:
    """A grid file (YAML); relative paths in it are taken from the current directory."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise GptcliError(f"cannot read grid file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise GptcliError(f"grid file {path} is not valid YAML") from None
    if not isinstance(raw, dict) or "config" not in raw \
            or not {"vary", "ladder", "sizes", "budgets"} & set(raw):
        raise GptcliError(f"grid file {path} needs `config:` and something to vary: `vary:` or "
                          f"`ladder:`, `sizes:`, `budgets:` ({GRID_KEYS})")  # fmt: skip
    unknown = [k for k in raw if k not in GRID_KEYS]
    if unknown:
        raise GptcliError(f"grid file {path}: unknown key {unknown[0]!r}; "
                          f"{suggest(str(unknown[0]), list(GRID_KEYS))}")  # fmt: skip
    sets = raw.get("set") or {}
    if isinstance(sets, dict):
        sets = [f"{k}={yaml_text(v)}" for k, v in _flat(sets).items()]
    elif not (isinstance(sets, list) and all(isinstance(x, str) for x in sets)):
        raise GptcliError(f"grid file {path}: set must map keys to values, e.g. "
                          "{train.max_iters: 1000}")  # fmt: skip
    ladder = _ladder(raw.get("ladder"), path) if "ladder" in raw else []
    vary = raw.get("vary", {})
    vary = _flat(vary) if isinstance(vary, dict) else vary
    if not isinstance(vary, dict) or not all(isinstance(v, list) and v for v in vary.values()):
        raise GptcliError(f"grid file {path}: vary must map each key to a list of values")
    for key in vary:
        if not re.fullmatch(r"\w+\.\w+", key):
            raise GptcliError(f"grid file {path}: vary key {key!r} must be section.key, e.g. "
                              "model.position")  # fmt: skip
    seeds = raw.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and all(type(s) is int for s in seeds)):
        raise GptcliError(f"grid file {path}: seeds must be a list of integers")
    out = raw.get("out") or f"out/sweeps/{Path(path).stem}"
    sizes = _sizes(raw.get("sizes"), path) if "sizes" in raw else []
    budgets, budget_sizes = _budgets(raw.get("budgets") or [], [n for n, _ in sizes], path)
    return Grid(Path(raw["config"]), Path(out), list(sets), vary, seeds, ladder, sizes, budgets,
                budget_sizes)  # fmt: skip


def _budgets(raw: Any, sizes: list[str], path: Path) -> tuple[list[float], dict[float, list]]:
    """The budgets' FLOPs, and the sizes of those that name theirs."""
    if not isinstance(raw, list):
        raw = [None]
    budgets, named = [], {}
    for entry in raw:
        flops = entry.get("flops") if isinstance(entry, dict) else entry
        extra = isinstance(entry, dict) and not set(entry) <= {"flops", "sizes"}
        if not _positive(flops) or extra:
            raise GptcliError(f"grid file {path}: budgets must be a list of FLOP counts > 0, "
                              "each a number or {flops: F, sizes: [NAME, ...]}, e.g. "
                              "[1.0e12, {flops: 3.0e12, sizes: [s, m]}]")  # fmt: skip
        budgets.append(float(flops))
        if isinstance(entry, dict) and "sizes" in entry:
            chosen = entry["sizes"]
            listed = isinstance(chosen, list)
            unknown = [n for n in chosen if n not in sizes] if listed else [chosen]
            if unknown or not chosen:
                raise GptcliError(f"grid file {path}: budget {flops:.3g}: sizes must list sizes "
                                  f"the grid names ({', '.join(sizes) or 'none'}); "
                                  f"not {unknown[0] if unknown else chosen!r}")  # fmt: skip
            named[float(flops)] = [str(n) for n in chosen]
    return budgets, named


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _sizes(raw: Any, path: Path) -> list[tuple[str, dict[str, Any]]]:
    if not (isinstance(raw, dict) and raw and all(isinstance(v, dict) and v
                                                  for v in raw.values())):  # fmt: skip
        raise GptcliError(f"grid file {path}: sizes must name groups of keys, e.g. "
                          "{s: {model.n_layer: 2, model.n_embd: 64}}")  # fmt: skip
    sizes = []
    for name, keys in raw.items():
        keys = _flat(keys)
        if not re.fullmatch(r"[\w.+-]+", str(name)) or not all(
                re.fullmatch(r"\w+\.\w+", k) for k in keys):  # fmt: skip
            raise GptcliError(f"grid file {path}: size {name!r}: a plain name, and keys "
                              "section.key")  # fmt: skip
        sizes.append((str(name), keys))
    return sizes


def _ladder(raw: Any, path: Path) -> list[tuple[str, dict[str, Any]]]:
    rungs = []
    for rung in raw if isinstance(raw, list) and raw else [None]:
        if not (isinstance(rung, dict) and isinstance(rung.get("name"), str)
                and re.fullmatch(r"[\w.+-]+", rung["name"])
                and isinstance(rung.get("set", {}), dict) and set(rung) <= {"name", "set"}):
            raise GptcliError(f"grid file {path}: ladder must be a list of rungs, each "
                              "{name: NAME, set: {section.key: value, ...}}")
        keys = _flat(rung.get("set") or {})
        if not all(re.fullmatch(r"\w+\.\w+", k) for k in keys):
            raise GptcliError(f"grid file {path}: rung {rung['name']}: keys must be section.key")
        rungs.append((rung["name"], keys))
    return rungs


def _flat(mapping: dict[str, Any]) -> dict[str, Any]:
    """{'model': {'position': [..]}} or {'model.position': [..]} -> {'model.position': [..]}."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def expand(grid: Grid) -> list[Combo]:
    """Every combination, each config loaded and checked before anything runs: a bad key or
    value stops the sweep, naming the combination."""
    seeds = grid.seeds or [None]
    combos = []
    scaled = [(sized, budget) for sized in grid.sizes or [(None, {})]
              for budget in grid.budgets or [None]
              if budget not in grid.budget_sizes or sized[0] in grid.budget_sizes[budget]]
    for ((size, shape), budget), (label, variant) in itertools.product(scaled, _variants(grid)):
        for seed in seeds:
            overrides = {**shape, **variant}
            parts = [f"size={size}"] if size is not None else []
            if budget is not None:
                # The budget decides the length: the base config's is dropped.
                overrides.update({"train.flops_budget": budget, "train.max_iters": None,
                                  "train.lr_decay_iters": None})  # fmt: skip
                parts.append(f"budget={budget:.3g}")
            if seed is not None:
                overrides["train.seed"] = seed
            name = ",".join([*parts, *label, *([f"seed={seed}"] if seed is not None else [])])
            name = name or "base"
            config = _checked_config(grid, overrides, name)
            combos.append(Combo(name, overrides, config, size, list(shape)))
    names = [c.name for c in combos]
    if len(set(names)) != len(names):
        raise GptcliError("two runs of the grid would share a directory; vary distinct values")
    return combos


def _variants(grid: Grid):
    """(name parts, overrides) of each variant: the ladder's rungs (or none) times the product
    of vary."""
    rungs, keys = [], {}
    for i, (rung, adds) in enumerate(grid.ladder):
        keys = {**keys, **adds}
        rungs.append(([f"rung={i}-{rung}"], keys))
    varied = list(grid.vary)
    shorts = _short_names(varied)
    for (rung_label, rung_keys), values in itertools.product(
            rungs or [([], {})], itertools.product(*(grid.vary[k] for k in varied))):
        label = [f"{shorts[k]}={_text(v)}" for k, v in zip(varied, values, strict=True)]
        yield rung_label + label, {**rung_keys, **dict(zip(varied, values, strict=True))}


def _checked_config(grid: Grid, overrides: dict[str, Any], name: str) -> Config:
    try:
        cfg = load_config(grid.config, grid.sets, overrides)
        check_config(cfg.model)
        micro_batches(cfg.train, cfg.model.block_size)
        if cfg.train.flops_budget is not None or cfg.train.tokens_per_param is not None:
            # The run's length, as its training will decide it (the sweep tracks its steps).
            cfg, _ = resolve_length(cfg, TokenDataset(cfg.data.dir).vocab_size)
        return cfg
    except GptcliError as exc:
        if "config file" in str(exc):
            raise
        raise GptcliError(f"run {name}: {exc}") from None


def _short_names(keys: list[str]) -> dict[str, str]:
    """model.position -> position, unless two varied keys share the last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def _text(value: Any) -> str:
    # As YAML writes it (true, null, 0.001), so the name reads as the --set that made it.
    return re.sub(r"[^A-Za-z0-9._+-]", "_", yaml_text(value))


def yaml_text(value: Any) -> str:
    """A value as --set takes it: 1000, true, null, [1, 2] (without YAML's '...' end marker)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
