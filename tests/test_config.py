from pathlib import Path

import pytest
import yaml

from gptcli.config import Config, ModelConfig, config_from_dict, load_config, reference
from gptcli.errors import GptcliError
from gptcli.model import check_config, choices

from .conftest import REPO


def load_checked(path, overrides=()):
    """load_config, then the model package's check of its variant names (config.py does not
    know them: it sits below the model)."""
    cfg = load_config(path, overrides)
    check_config(cfg.model)
    return cfg


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_checked(path)
    assert isinstance(cfg, Config)
    # Every key the file sets is the config's value (none dropped or renamed on the way), and
    # the config round-trips through its dict form (what a checkpoint stores).
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section, values in raw.items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value, f"{section}.{key}"
    assert config_from_dict(cfg.to_dict()) == cfg
    assert cfg.data.dir and cfg.train.out_dir.startswith("out/")


def test_shipped_cpu_recipe_matches_nanogpt():
    cfg = load_config(REPO / "configs" / "shakespeare-char-cpu.yaml")
    m, t = cfg.model, cfg.train
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.bias, m.dropout) == (
        4,
        4,
        128,
        64,
        False,
        0.0,
    )
    assert (t.batch_size, t.max_iters, t.lr, t.min_lr, t.warmup_iters) == (
        12,
        2000,
        1e-3,
        1e-4,
        100,
    )
    assert (t.beta1, t.beta2, t.weight_decay, t.grad_clip) == (0.9, 0.99, 0.1, 1.0)
    assert (t.eval_interval, t.eval_iters) == (250, 20)


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.model == ModelConfig()


def test_overrides_are_typed(tmp_path):
    path = write(tmp_path, "model:\n  n_layer: 4\n")
    cfg = load_config(
        path,
        [
            "model.n_layer=2",
            "train.lr=1e-3",
            "model.bias=false",
            "sample.top_k=null",
            "train.out_dir=out/x",
        ],
    )
    assert cfg.model.n_layer == 2
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.model.bias is False
    assert cfg.sample.top_k is None
    assert cfg.train.out_dir == "out/x"


def test_values_apply_after_overrides(tmp_path):
    cfg = load_config(None, ["train.out_dir=a"], {"train.out_dir": "b: c"})
    assert cfg.train.out_dir == "b: c"  # a typed value, not re-read as YAML


def test_yaml_float_without_dot_is_accepted(tmp_path):
    # YAML 1.1 reads 6e-4 as a string; a user means a number.
    cfg = load_config(write(tmp_path, "train:\n  lr: 6e-4\n  min_lr: 6e-5\n"))
    assert cfg.train.lr == pytest.approx(6e-4)


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "needles"),
    [
        ("model:\n  n_layers: 2\n", [], ["model.n_layers", "did you mean 'n_layer'"]),
        ("modle:\n  n_layer: 2\n", [], ["modle", "did you mean 'model'"]),
        ("model:\n  n_layer: two\n", [], ["model.n_layer", "integer"]),
        ("model:\n  bias: 1\n", [], ["model.bias", "true/false"]),
        ("model:\n  n_embd: 100\n  n_head: 3\n", [], ["model.n_embd", "divisible"]),
        ("model:\n  block_size: 0\n", [], ["model.block_size", ">= 1"]),
        ("model:\n  position: rotary\n", [], ["model.position", "valid:"]),
        ("model:\n  norm: layer_norm\n", [], ["model.norm", "did you mean 'layernorm'"]),
        ("model:\n  vocab_size: 50257\n", [], ["model.vocab_size", "meta.json"]),
        ("model:\n  dropout: 1.5\n", [], ["model.dropout", "[0, 1)"]),
        ("train:\n  precision: fp8\n", [], ["train.precision", "bf16"]),
        ("train:\n  device: gpu\n", [], ["train.device", "cuda"]),
        ("train:\n  lr: 1e-4\n  min_lr: 1e-3\n", [], ["train.min_lr", "larger"]),
        ("model: 3\n", [], ["model", "mapping"]),
        ("", ["model.n_layer"], ["--set", "section.key=value"]),
        ("", ["nlayer=3"], ["--set", "section.key=value"]),
        ("", ["trian.lr=1"], ["trian", "did you mean 'train'"]),
        ("", ["sample.top_p=0"], ["sample.top_p", "(0, 1]"]),
    ],
)
def test_bad_config_names_the_key(tmp_path, yaml_text, overrides, needles):
    with pytest.raises(GptcliError) as info:
        load_checked(write(tmp_path, yaml_text), overrides)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(GptcliError, match=r"not valid YAML at line 4"):
        load_config(write(tmp_path, "model:\n  n_layer: 2\n  bias: [true\ntrain: {}\n"))


def test_missing_file(tmp_path):
    with pytest.raises(GptcliError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(GptcliError, match="config file is a directory, not a YAML file"):
        load_config(tmp_path)


def test_unknown_names_list_the_valid_ones_plainly():
    with pytest.raises(GptcliError, match=r"^config error: nosection: unknown section in --set; "
                                          r"valid: data, model, train, sample$"):  # fmt: skip
        load_config(None, ["nosection.x=1"])
    with pytest.raises(GptcliError, match=r"section in --set; did you mean 'model'\? valid: "):
        load_config(None, ["modle.n_layer=1"])


def test_every_key_has_a_meaning_for_the_reference():
    from gptcli.config_reference import MEANINGS, markdown

    keys = [key for key, *_ in reference(choices())]
    assert sorted(MEANINGS) == sorted(keys), "config_reference.MEANINGS must name exactly the keys"
    assert all(MEANINGS[k].strip() for k in keys)
    table = markdown(choices())
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == keys
    assert "| `model.position` | a string | `'learned'` | none, learned, sincos" in table
