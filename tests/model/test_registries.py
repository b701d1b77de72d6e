"""Every registry of a model part asks its entries the same questions (registry.Part), the tests
and the variants page enumerate the registries rather than naming their entries, and a class that
cannot answer is refused when it registers."""

import dataclasses
import re

import pytest

from gptcli.config import ModelConfig
from gptcli.model import REGISTRIES, choices
from gptcli.registry import PART, Registry

from ..conftest import REPO

ENTRIES = [(key, name) for key, registry in REGISTRIES.items() for name in registry.names()]
FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


@pytest.mark.parametrize(("key", "name"), ENTRIES, ids=[f"{k}={n}" for k, n in ENTRIES])
def test_every_entry_answers_the_part_interface(key, name):
    part = REGISTRIES[key][name]
    assert key in FIELDS and set(part.config_keys) <= FIELDS, part.config_keys
    assert part.exports_as is None or isinstance(part.exports_as, str)
    for bias in (True, False):
        cfg = ModelConfig(n_embd=32, n_head=4, block_size=16, bias=bias, **{key: name})
        count = part.num_params(cfg)
        assert isinstance(count, int) and count >= 0


def test_the_exports_name_what_transformers_calls_each_choice():
    from gptcli.interop import gpt2, llama

    activations, mlps = REGISTRIES["activation"], REGISTRIES["mlp"]
    assert {n: activations[n].exports_as for n in activations.names()} == gpt2.ACTIVATIONS
    assert gpt2.ACTIVATIONS["gelu_tanh"] == "gelu_new"  # GPT-2's own
    assert llama.GATED == {"swiglu": "silu", "geglu": "gelu"}
    assert mlps["standard"].exports_as is None


def test_choices_come_from_the_registries():
    assert choices() == {f"model.{k}": r.names() for k, r in REGISTRIES.items()}
    assert all(r.interface == PART for r in REGISTRIES.values())


def test_the_readme_has_a_row_for_every_entry():
    text = (REPO / "docs" / "reference" / "variants.md").read_text(encoding="utf-8")
    table = text[text.index("# Model variants") : text.index("Attention always runs")]
    rows: dict[str, str] = {}
    key = None
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not line.startswith("|"):
            continue
        key = cells[0].strip("`") or key
        rows[key] = rows.get(key, "") + " " + cells[1]
    for key, name in ENTRIES:
        assert re.search(rf"`{re.escape(name)}`", rows.get(key, "")), f"no row: {key}={name}"


def test_an_entry_that_cannot_answer_is_refused():
    registry = Registry("test part", PART)

    class Bare:
        pass

    missing = "'bare' does not define config_keys, exports_as, num_params"
    with pytest.raises(TypeError, match=missing):
        registry.register("bare")(Bare)

    class Whole:
        config_keys = ()
        exports_as = None

        @classmethod
        def num_params(cls, cfg):
            return 0

    assert registry.register("whole")(Whole) is Whole and registry.names() == ["whole"]
