import json
import re

import pytest
import yaml

from gptcli.errors import GptcliError
from gptcli.study.grid import Grid, expand, load_grid, parse_seeds, parse_vary

from ..conftest import REPO
from ..helpers import base_config


def test_grid_is_the_product_of_varied_keys_and_seeds(tmp_path, char_data):
    vary = {"model.position": ["learned", "rope"], "model.norm": ["layernorm"]}
    config = base_config(tmp_path, char_data)
    grid = Grid(config, tmp_path / "sweep", ["train.lr=0.002"], vary, [1, 2])
    combos = expand(grid)
    assert [c.name for c in combos] == [
        "position=learned,norm=layernorm,seed=1", "position=learned,norm=layernorm,seed=2",
        "position=rope,norm=layernorm,seed=1", "position=rope,norm=layernorm,seed=2",
    ]  # fmt: skip
    assert combos[3].config.model.position == "rope" and combos[3].config.train.seed == 2
    assert all(c.config.train.lr == 0.002 for c in combos)  # --set applies to every run
    assert combos[0].overrides == {"model.position": "learned", "model.norm": "layernorm",
                                   "train.seed": 1}  # fmt: skip


def test_names_use_full_keys_only_when_short_ones_clash_and_values_as_yaml(tmp_path, char_data):
    grid = Grid(base_config(tmp_path, char_data), tmp_path / "s", [],
                {"model.dropout": [0.0, 0.1], "model.bias": [True]})  # fmt: skip
    assert [c.name for c in expand(grid)] == ["dropout=0.0,bias=true", "dropout=0.1,bias=true"]


def test_a_bad_combination_stops_the_sweep_before_anything_runs(tmp_path, char_data):
    grid = Grid(base_config(tmp_path, char_data), tmp_path / "s", [],
                {"model.n_head": [2, 3]})  # fmt: skip
    with pytest.raises(GptcliError, match=r"run n_head=3: config error: model.n_embd: 16 is not"):
        expand(grid)
    grid.vary = {"model.position": ["rope", "rotary"]}
    message = r"run position=rotary: config error: model.position: 'rot"
    with pytest.raises(GptcliError, match=message):
        expand(grid)
    grid.vary = {"model.n_layrs": [1]}
    with pytest.raises(GptcliError, match=r"model.n_layrs: unknown key; did you mean 'n_layer'"):
        expand(grid)
    assert not (tmp_path / "s").exists()


def test_grid_file_says_what_the_command_line_says(tmp_path, char_data):
    config = base_config(tmp_path, char_data)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "config": str(config), "out": str(tmp_path / "s"),
        "set": {"train": {"lr": 0.002, "max_iters": 7}},
        "vary": {"model.position": ["learned", "rope"]}, "seeds": [1, 2],
    }))  # fmt: skip
    from_file = load_grid(path)
    assert from_file.sets == ["train.lr=0.002", "train.max_iters=7"]  # as --set reads them
    vary = dict([parse_vary("model.position=learned,rope")])
    sets = ["train.lr=0.002", "train.max_iters=7"]
    from_flags = Grid(config, tmp_path / "s", sets, vary, parse_seeds("1,2"))
    assert [(c.name, c.config) for c in expand(from_file)] == [
        (c.name, c.config) for c in expand(from_flags)
    ]
    path.write_text("config: x.yaml\nvary: {model.position: rope}\n")
    with pytest.raises(GptcliError, match="vary must map each key to a list"):
        load_grid(path)
    with pytest.raises(GptcliError, match="bad --vary"):
        parse_vary("position=rope")


def test_grid_file_shapes_and_values_that_are_not_yaml(tmp_path, char_data):
    config = base_config(tmp_path, char_data)
    assert parse_vary("model.position=[learned")[1] == ["[learned"]  # kept as text
    path = tmp_path / "g.yaml"
    path.write_text(
        yaml.safe_dump({"config": str(config), "vary": {"model": {"position": ["rope"]}}})
    )
    assert load_grid(path).vary == {"model.position": ["rope"]}
    for bad, message in (
        ({"vary": {"position": ["rope"]}}, "must be section.key"),
        ({"vary": {"model.position": ["rope"]}, "set": "train.max_iters=10"}, "set must map"),
        ({"vary": {"model.position": ["rope"]}, "seed": [1]},
         r"unknown key 'seed'; did you mean 'seeds'\? valid: config, "),
    ):
        path.write_text(yaml.safe_dump({"config": str(config), **bad}))
        with pytest.raises(GptcliError, match=message):
            load_grid(path)


def test_a_ladder_adds_each_rung_to_the_ones_before(tmp_path, char_data):
    grid_file = tmp_path / "ladder.yaml"
    grid_file.write_text(
        f"config: {base_config(tmp_path, char_data)}\nout: {tmp_path / 'out'}\n"
        "ladder:\n  - {name: gpt2}\n  - {name: rope, set: {model.position: rope}}\n"
        "  - {name: swiglu, set: {model: {mlp: swiglu}}}\nseeds: [1, 2]\n"
    )
    combos = expand(load_grid(grid_file))
    names = [c.name for c in combos]
    assert names == ["rung=0-gpt2,seed=1", "rung=0-gpt2,seed=2", "rung=1-rope,seed=1",
                     "rung=1-rope,seed=2", "rung=2-swiglu,seed=1", "rung=2-swiglu,seed=2"]
    last = combos[-1].config.model
    assert (last.position, last.mlp) == ("rope", "swiglu")  # rung 1's key is kept
    assert combos[0].config.model.position == "learned"  # the base config's


def test_the_shipped_block_study_is_the_ladder_the_readme_describes():
    grid = load_grid(REPO / "configs" / "sweeps" / "blocks.yaml")
    rungs = [name for name, _ in grid.ladder]
    assert rungs == ["gpt2", "rope", "rmsnorm", "swiglu", "gqa2", "mqa", "qknorm"]
    assert len(grid.seeds) >= 2


@pytest.mark.parametrize(
    "ladder",
    ["ladder: []", "ladder: [{set: {model.norm: rmsnorm}}]", "ladder: [{name: a, set: [1]}]",
     "ladder: [{name: a, set: {norm: rmsnorm}}]"],
)
def test_a_bad_ladder_is_one_line(tmp_path, ladder):
    grid_file = tmp_path / "bad.yaml"
    grid_file.write_text(f"config: configs/demo.yaml\n{ladder}\n")
    with pytest.raises(GptcliError, match="ladder|rung"):
        load_grid(grid_file)


def sized_grid(tmp_path, char_data, **extra):
    grid = {
        "config": str(base_config(tmp_path, char_data)),
        "out": str(tmp_path / "sweep"),
        "sizes": {"s": {"model.n_layer": 1, "model.n_embd": 16},
                  "m": {"model": {"n_layer": 2, "n_embd": 32}, "train.lr": 5.0e-4}},
        "budgets": [1.0e7, 2.0e7],
        "seeds": [1],
        **extra,
    }  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))  # sizes keep the file's order
    return load_grid(path)


def test_sizes_and_budgets_cross_the_variants_and_name_the_runs(tmp_path, char_data):
    from gptcli.compute import flops_per_token, tokens_per_step

    grid = sized_grid(tmp_path, char_data, vary={"model.position": ["learned", "rope"]})
    combos = expand(grid)
    assert [c.name for c in combos][:3] == [
        "size=s,budget=1e+07,position=learned,seed=1", "size=s,budget=1e+07,position=rope,seed=1",
        "size=s,budget=2e+07,position=learned,seed=1"]  # fmt: skip
    assert len(combos) == 2 * 2 * 2
    by_name = {c.name: c for c in combos}
    m = by_name["size=m,budget=2e+07,position=rope,seed=1"]
    assert (m.config.model.n_layer, m.config.model.n_embd, m.config.train.lr) == (2, 32, 5e-4)
    assert m.size == "m" and m.size_keys == ["model.n_layer", "model.n_embd", "train.lr"]
    assert m.overrides["train.flops_budget"] == 2e7 and m.config.model.position == "rope"
    # Each run's length is its own budget over its own cost: the larger model runs fewer steps.
    vocab = json.loads((char_data / "meta.json").read_text())["vocab_size"]
    for c in combos:
        per_step = tokens_per_step(c.config.train, c.config.model.block_size)
        flops = c.config.train.max_iters * per_step * flops_per_token(c.config.model, vocab)
        assert c.config.train.flops_budget <= flops < c.config.train.flops_budget + per_step * \
            flops_per_token(c.config.model, vocab)  # fmt: skip
    s = by_name["size=s,budget=2e+07,position=rope,seed=1"]
    assert m.config.train.max_iters < s.config.train.max_iters
    # A ladder crosses them as vary does.
    ladder = sized_grid(tmp_path, char_data, ladder=[{"name": "gpt2"},
                        {"name": "rope", "set": {"model.position": "rope"}}])  # fmt: skip
    assert expand(ladder)[1].name == "size=s,budget=1e+07,rung=1-rope,seed=1"


def test_a_budget_may_name_its_sizes_and_a_ladder_crosses_vary(tmp_path, char_data):
    grid = sized_grid(tmp_path, char_data, budgets=[1.0e7, {"flops": 2.0e7, "sizes": ["m"]}],
                      ladder=[{"name": "gpt2"},
                              {"name": "rope", "set": {"model.position": "rope"}}],
                      vary={"train.lr": [1e-3, 2e-3]})  # fmt: skip
    names = [c.name for c in expand(grid)]
    assert len(names) == 3 * 2 * 2  # s at the first budget, m at both; 2 rungs x 2 rates
    assert "size=s,budget=2e+07,rung=0-gpt2,lr=0.001,seed=1" not in names
    assert names[:2] == ["size=s,budget=1e+07,rung=0-gpt2,lr=0.001,seed=1",
                         "size=s,budget=1e+07,rung=0-gpt2,lr=0.002,seed=1"]  # fmt: skip
    rope = {c.name: c for c in expand(grid)}["size=m,budget=2e+07,rung=1-rope,lr=0.002,seed=1"]
    assert (rope.config.model.position, rope.config.train.lr) == ("rope", 2e-3)
    assert grid.to_dict()["budgets"] == [1.0e7, {"flops": 2.0e7, "sizes": ["m"]}]


@pytest.mark.parametrize(("extra", "needle"), [
    ({"budgets": [{"flops": 1e7, "sizes": ["xl"]}]}, "budget 1e+07: sizes must list sizes the "
                                                      "grid names (s, m); not 'xl'"),
    ({"budgets": [{"flops": 1e7, "size": ["s"]}]}, "each a number or {flops: F, sizes:"),
    ({"sizes": {"s": {}}}, "sizes must name groups of keys"),
    ({"sizes": {"s s": {"model.n_layer": 1}}}, "size 's s': a plain name"),
    ({"budgets": [0]}, "budgets must be a list of FLOP counts > 0"),
    ({"budgets": "1e7"}, "budgets must be a list"),
])  # fmt: skip
def test_bad_sizes_and_budgets_are_one_line(tmp_path, char_data, extra, needle):
    with pytest.raises(GptcliError, match=re.escape(needle)):
        sized_grid(tmp_path, char_data, **extra)
