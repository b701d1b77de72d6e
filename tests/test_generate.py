import json

import pytest
import torch

from gptcli.config import ModelConfig
from gptcli.generate import _top_p_filter, generate, sample_next, sampling_precision
from gptcli.model import GPT


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=8), 30).eval()


def run(model, **kw):
    idx = torch.tensor([[1, 2, 3]])
    return torch.stack(list(generate(model, idx, 12, **kw)), dim=1)


def test_top_k_one_equals_greedy(model):
    g = torch.Generator().manual_seed(0)
    assert torch.equal(
        run(model, temperature=0.0), run(model, temperature=1.0, top_k=1, generator=g)
    )


def test_greedy_matches_argmax_of_a_full_forward(model):
    out = run(model, temperature=0.0)
    seq = torch.tensor([[1, 2, 3]])
    for token in out[0]:
        logits, _ = model(seq[:, -8:])
        assert logits[0, -1].argmax() == token
        seq = torch.cat([seq, token.view(1, 1)], dim=1)


def test_same_seed_same_sample(model):
    a = run(model, generator=torch.Generator().manual_seed(5))
    b = run(model, generator=torch.Generator().manual_seed(5))
    c = run(model, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: (_top_p_filter(logits, p) > float("-inf")).nonzero()[:, 1].tolist()  # noqa: E731
    assert kept(0.5) == [1]
    assert kept(0.8) == [1, 3]
    assert kept(0.81) == [1, 2, 3]
    assert kept(0.999) == [0, 1, 2, 3]


def test_sampling_respects_top_k_and_temperature():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    picks = sample_next(logits, temperature=1.0, top_k=2, generator=g)
    assert set(picks.flatten().tolist()) == {2, 3}
    cold = sample_next(logits, temperature=0.05, generator=g)
    assert (cold == 3).float().mean() > 0.99


def test_generation_slides_past_block_size(model):
    idx = torch.randint(30, (2, 5))
    out = list(
        generate(model, idx, 20, temperature=1.0, generator=torch.Generator().manual_seed(0))
    )
    assert len(out) == 20 and out[0].shape == (2,)


# --- the KV cache: for every variant, cached generation equals re-running the window --------


from gptcli.data.tokenizers import CharTokenizer  # noqa: E402
from gptcli.errors import GptcliError  # noqa: E402
from gptcli.generate import TextStream  # noqa: E402

from .helpers import every_variant, variant  # noqa: E402


@every_variant
def test_cached_logits_equal_a_full_forward(position, norm, placement, block):
    model = variant(position, norm, placement, block)
    idx = torch.randint(30, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache(2, 12)
        parts = [model(idx[:, :5], cache=cache)[0]]  # a prefill ...
        parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(5, 9)]  # ... steps
        parts.append(model(idx[:, 9:], cache=cache)[0])  # ... and a chunk after the cache
    # fp32 rounding differs between one long attention call and many short ones
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-3, rtol=1e-3)


@every_variant
def test_cached_greedy_equals_uncached_within_and_past_the_window(position, norm, placement, block):
    model = variant(position, norm, placement, block)
    idx = torch.randint(30, (2, 4), generator=torch.Generator().manual_seed(4))
    # 40 new tokens on a 12-token window: the window restarts several times.
    cached = torch.stack(list(generate(model, idx, 40, temperature=0.0)), dim=1)
    plain = torch.stack(list(generate(model, idx, 40, temperature=0.0, use_cache=False)), dim=1)
    assert torch.equal(cached, plain)


@pytest.mark.parametrize("position", ["none", "sincos", "rope", "alibi", "relative"])
def test_no_window_extends_past_block_size(position):
    model = variant(position, "layernorm")
    idx = torch.randint(30, (1, 4), generator=torch.Generator().manual_seed(5))
    kw = {"temperature": 0.0, "window": False}
    cached = torch.stack(list(generate(model, idx, 30, **kw)), dim=1)
    plain = torch.stack(list(generate(model, idx, 30, use_cache=False, **kw)), dim=1)
    assert torch.equal(cached, plain)
    # ... and past block_size the model sees the whole context: the next token comes from a
    # forward over all of it, not over a window
    seq = torch.cat([idx, cached], dim=1)
    logits, _ = model(seq[:, :-1])
    assert logits.shape[1] > 12 and logits[0, -1].argmax() == cached[0, -1]


def test_learned_positions_cannot_drop_the_window():
    model = variant("learned", "layernorm")
    with pytest.raises(GptcliError, match="block_size=12"):
        list(generate(model, torch.zeros(1, 2, dtype=torch.long), 5, window=False))


def test_a_long_prompt_is_cut_to_the_window():
    model = variant("learned", "layernorm")
    idx = torch.randint(30, (1, 30))
    out = list(generate(model, idx, 3, temperature=0.0))
    logits, _ = model(idx[:, -12:])
    assert out[0].item() == logits[0, -1].argmax().item()


def test_generate_restores_training_mode():
    model = variant("rope", "layernorm").train()
    list(generate(model, torch.zeros(1, 1, dtype=torch.long), 3))
    assert model.training


class ByteTokenizer(CharTokenizer):
    """One token per UTF-8 byte, so multi-byte characters are split across tokens."""

    def __init__(self):
        super().__init__("".join(chr(i) for i in range(256)))

    def decode_bytes(self, ids):
        return bytes(ids)


def stream_text(text, stop=(), tokenizer=None):
    stream = TextStream(tokenizer or ByteTokenizer(), stop)
    pieces = [stream.push(b) for b in text.encode("utf-8")]
    pieces.append(stream.finish())
    return pieces


def test_stream_holds_split_characters_until_complete():
    pieces = stream_text("a好🙂b")
    assert "".join(pieces) == "a好🙂b"
    assert "\ufffd" not in "".join(pieces)
    assert pieces[:4] == ["a", "", "", "好"]  # 好 is three bytes


def test_stream_stops_before_a_stop_string_and_never_shows_it():
    pieces = stream_text("one two\n\nthree", stop=["\n\n"])
    assert "".join(pieces) == "one two"
    pieces = stream_text("abcabd", stop=["xyz", "abd"])
    assert "".join(pieces) == "abc"
    assert "".join(stream_text("no stop here", stop=["zz"])) == "no stop here"


def autocast_bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def steps_of(model, idx):
    """A full forward's logits, and the same tokens' logits through the cache (prefill, steps)."""
    with torch.no_grad(), autocast_bf16():
        full, _ = model(idx)
        cache = model.new_cache(2, 12)
        parts = [model(idx[:, :5], cache=cache)[0]]
        parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(5, 12)]
    return full, torch.cat(parts, dim=1), cache


@every_variant
def test_bf16_sampling_weights_give_what_autocast_gives(position, norm, placement, block):
    import copy

    from gptcli import cpu
    from gptcli.model.inference import LowPrecisionLinear, can_pack, for_inference

    model = variant(position, norm, placement, block)
    idx = torch.randint(30, (2, 12), generator=torch.Generator().manual_seed(3))
    full, cached, cache = steps_of(model, idx)
    # Cast once, unpacked: the same F.linear on the same bf16 operands as autocast's, so the
    # same kernel on any CPU: the same logits, bit for bit.
    cast = copy.deepcopy(model)
    for_inference(cast, torch.bfloat16, pack=False)
    linears = [m for m in cast.modules() if isinstance(m, LowPrecisionLinear)]
    assert len(linears) == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert all(m.weight.dtype == torch.bfloat16 and m.packed is None for m in linears)
    assert cast.state_dict().keys() == model.state_dict().keys()
    full_cast, cached_cast, _ = steps_of(cast, idx)
    assert torch.equal(full_cast, full) and torch.equal(cached_cast, cached)
    # Packed (where sampling packs): oneDNN's packed kernel is another kernel, which on some CPUs
    # (AMX) sums in another order; each linear's bf16 output may then round to the neighbouring
    # value, 2^-7 of it. A few such roundings through two layers stay within 2^-5 of the scale.
    native = cpu.has_native_bf16()
    packed = copy.deepcopy(model)
    for_inference(packed, torch.bfloat16, pack=native)
    layers = [m for m in packed.modules() if isinstance(m, LowPrecisionLinear)]
    assert all((m.packed is not None) == (native and can_pack(torch.bfloat16)) for m in layers)
    full_packed, cached_packed, _ = steps_of(packed, idx)
    for ours, theirs in ((full_packed, full), (cached_packed, cached)):
        scale = theirs.abs().max().item()
        torch.testing.assert_close(ours, theirs, rtol=2**-5, atol=2**-5 * scale)
    # The cache keeps keys in the dtype attention computes in (fp32 on a CPU: no cast of the
    # whole cache at every token), and stays close to a full forward.
    assert cache[0].k.dtype == torch.float32
    torch.testing.assert_close(cached, full, atol=0.1, rtol=0.05)


def test_decode_attention_leaves_out_cudnn_on_cuda_only():
    """cuDNN's attention builds a graph per new sequence length, which a KV cache meets at every
    token (gptcli.model.inference.decode_attention)."""
    from gptcli.model.inference import decode_attention

    assert torch.backends.cuda.cudnn_sdp_enabled()
    with decode_attention(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with decode_attention(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled()


def test_auto_samples_in_the_precision_measured_faster_here(monkeypatch, tmp_path):
    from gptcli import autotune, cpu

    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=4, n_embd=64, block_size=16), 30).eval()
    dev = torch.device("cpu")
    measured = []
    real = autotune._measure
    monkeypatch.setattr(autotune, "_measure", lambda *a: measured.append(1) or real(*a))
    monkeypatch.setenv("GPTCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: True)
    choice = sampling_precision("auto", dev, model)
    assert choice in ("fp32", "bf16") and measured == [1]
    # The measurement timed both precisions on this model, and is remembered: asked again,
    # the same answer, from the cache.
    entry = next(iter(json.loads((autotune.cache_dir() / autotune.FILE).read_text()).values()))
    assert entry["choice"] == choice and set(entry["seconds"]) == {"fp32", "bf16"}
    assert entry["for"]["task"] == "sample token" and entry["for"]["model"]["n_embd"] == 64
    assert sampling_precision("auto", dev, model) == choice and measured == [1]
    # Without native bf16 nothing is measured: fp32.
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: False)
    assert sampling_precision("auto", dev, model) == "fp32" and measured == [1]
    # Only auto chooses: a precision asked for by name is kept, and fp16 still refused on a CPU.
    assert [sampling_precision(p, dev, model) for p in ("fp32", "bf16")] == ["fp32", "bf16"]
    with pytest.raises(GptcliError, match="fp16 needs a CUDA device"):
        sampling_precision("fp16", dev, model)


