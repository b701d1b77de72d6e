"""gptcli.model.decode.forward_cached: the flat forward that sampling runs over a KV cache gives
GPT.forward's logits bit for bit, for every variant, in fp32 and in bf16 sampling."""

import copy

import pytest
import torch

from gptcli.cpu import has_native_bf16
from gptcli.model.decode import forward_cached
from gptcli.model.inference import for_inference

from ..helpers import every_variant, variant


def both_paths(model, idx, step):
    """The same tokens through the cache both ways: a prefill of 5, single steps, a chunk."""
    cuts = [0, 5, 6, 7, 8, 9, idx.shape[1]]
    caches = model.new_cache(idx.shape[0], 12), model.new_cache(idx.shape[0], 12)
    general, flat = [], []
    with torch.no_grad(), step():
        for a, b in zip(cuts, cuts[1:], strict=False):
            general.append(model(idx[:, a:b], cache=caches[0])[0])
            flat.append(forward_cached(model, idx[:, a:b], caches[1]))
    return torch.cat(general, dim=1), torch.cat(flat, dim=1)


@every_variant
def test_flat_forward_equals_the_general_one(position, norm, placement, block):
    model = variant(position, norm, placement, block)
    idx = torch.randint(30, (2, 12), generator=torch.Generator().manual_seed(3))
    general, flat = both_paths(model, idx, torch.no_grad)
    assert torch.equal(flat, general)
    # ... and in bf16 sampling: cast (and, where sampling packs, packed) weights under autocast
    cast = copy.deepcopy(model)
    for_inference(cast, torch.bfloat16, pack=has_native_bf16())
    general, flat = both_paths(cast, idx, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert flat.dtype == torch.bfloat16 and torch.equal(flat, general)


def test_a_new_placement_is_one_class_and_both_paths_run_its_wiring(monkeypatch):
    """A placement registered with its wire() alone (here GPT-J's parallel block: attention and
    MLP both read the block's input) samples through the cached path with the same logits."""
    from gptcli.model.gpt import PLACEMENTS, Block

    class ParallelBlock(Block):
        @staticmethod
        def wire(x, attend, ln_1, mlp, ln_2):
            return x + attend(ln_1(x)) + mlp(ln_2(x))

    monkeypatch.setitem(PLACEMENTS._items, "parallel", ParallelBlock)
    model = variant("rope", "rmsnorm", "parallel")
    idx = torch.randint(30, (2, 12), generator=torch.Generator().manual_seed(3))
    general, flat = both_paths(model, idx, torch.no_grad)
    assert torch.equal(flat, general)
    pre = variant("rope", "rmsnorm", "pre")  # the same weights, wired otherwise
    assert not torch.equal(pre(idx)[0], model(idx)[0])
    # A placement that says nothing of its wiring fails at once, on either path.
    monkeypatch.setitem(PLACEMENTS._items, "unwired", Block)
    with pytest.raises(NotImplementedError, match="wire"):
        variant("rope", "rmsnorm", "unwired")(idx)


def test_a_model_in_training_mode_runs_the_general_forward():
    model = variant("alibi", "layernorm").train()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        forward_cached(model, torch.randint(30, (1, 4)), model.new_cache(1, 12))
    assert calls == [1]


def test_it_refuses_positions_past_what_the_scheme_encodes():
    model = variant("learned", "layernorm")
    cache = model.new_cache(1, 20)
    with torch.no_grad(), pytest.raises(ValueError, match="block_size=12"):
        forward_cached(model, torch.zeros(1, 13, dtype=torch.long), cache)
