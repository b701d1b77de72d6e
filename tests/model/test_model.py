import math

import pytest
import torch
import torch.nn.functional as F

from gptcli.config import ModelConfig
from gptcli.model import GPT, count_params_formula
from gptcli.model.norms import ReferenceLayerNorm
from gptcli.model.positions import POSITIONS

VOCAB = 50


def tiny(**kw) -> ModelConfig:
    base = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16}
    return ModelConfig(**{**base, **kw})


def test_forward_shapes_and_initial_loss():
    torch.manual_seed(0)
    model = GPT(tiny(), VOCAB)
    idx = torch.randint(VOCAB, (3, 16))
    logits, loss = model(idx, torch.randint(VOCAB, (3, 16)))
    assert logits.shape == (3, 16, VOCAB)
    # At init the prediction is near uniform: loss close to ln(vocab).
    assert abs(loss.item() - math.log(VOCAB)) < 0.2
    assert model(idx)[1] is None


@pytest.mark.parametrize("training", [False, True])
def test_causal_no_logit_sees_a_later_token(training):
    torch.manual_seed(0)
    model = GPT(tiny(), VOCAB).train(training)
    idx = torch.randint(VOCAB, (2, 16))
    t = 9
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % VOCAB
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t:], b[:, t:])


def test_learned_positions_refuse_sequences_past_block_size():
    model = GPT(tiny(), VOCAB)
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_gpt2_124m_parameter_count():
    cfg = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024)
    with torch.device("meta"):
        model = GPT(cfg, 50257)
    assert model.num_params() == 124_439_808
    assert count_params_formula(cfg, 50257) == 124_439_808


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("position", ["learned", "none"])
def test_parameter_count_matches_the_formula(bias, tie, position):
    cfg = tiny(bias=bias, tie_embeddings=tie, position=position, mlp_ratio=3)
    assert GPT(cfg, VOCAB).num_params() == count_params_formula(cfg, VOCAB)


def test_tied_embeddings_share_one_tensor():
    model = GPT(tiny(), VOCAB)
    assert model.lm_head.weight is model.wte.weight
    untied = GPT(tiny(tie_embeddings=False), VOCAB)
    assert untied.lm_head.weight is not untied.wte.weight


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=8, n_head=4, n_embd=256, block_size=32)
    model = GPT(cfg, VOCAB)
    proj = model.blocks[0].attn.c_proj.weight.std().item()
    other = model.blocks[0].attn.c_attn.weight.std().item()
    assert proj == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert other == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("bias", [True, False])
def test_written_out_layernorm_equals_torch(bias):
    torch.manual_seed(0)
    norm = ReferenceLayerNorm(24, bias=bias)
    with torch.no_grad():
        norm.weight.normal_()
        if bias:
            norm.bias.normal_()
    x = torch.randn(4, 7, 24) * 3 + 1
    expected = F.layer_norm(x, (24,), norm.weight, norm.bias, eps=1e-5)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_a_tiny_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = GPT(tiny(), VOCAB)
    idx = torch.randint(VOCAB, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize("bias", [False, True])
def test_cpu_bf16_attention_runs_in_fp32(bias):
    # Under CPU autocast the attention kernel is handed fp32 (its bf16 kernel is ~3x slower);
    # the result is fp32 attention of the bf16 q, k, v, returned in bf16, gradients included.
    from gptcli.model.attention import _sdpa

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 8, 4).bfloat16().requires_grad_() for _ in range(3))
    mask = torch.randn(8, 8).masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), -math.inf)
    mask = mask if bias else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = _sdpa(q, k, v, mask, 0.0)
    assert y.dtype == torch.bfloat16
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask, is_causal=mask is None)
    assert torch.equal(y, ref.bfloat16())
    y.float().sum().backward()
    ref.bfloat16().float().sum().backward()
    for a, b in ((q, q32), (k, k32), (v, v32)):
        assert torch.equal(a.grad, b.grad.bfloat16())


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("bias_dims", [3, 4])
def test_attention_with_a_learned_bias_matches_torch_and_gives_the_bias_its_gradient(
    kv_heads, bias_dims
):
    # A bias that needs its gradient (relative positions) is attended by gptcli's written-out
    # attention on CPU, not torch's math path; a constant 3-D one (ALiBi) goes to torch as 4-D.
    from gptcli.model.attention import _attend

    torch.manual_seed(0)
    q = torch.randn(2, 4, 8, 6, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, kv_heads, 8, 6, dtype=torch.float64, requires_grad=True)
            for _ in range(2))  # fmt: skip
    causal = ~torch.ones(8, 8, dtype=torch.bool).tril()
    shape = (4, 8, 8) if bias_dims == 3 else (1, 4, 8, 8)
    for learned in (True, False):
        bias = torch.randn(shape, dtype=torch.float64).masked_fill(causal, -math.inf)
        bias.requires_grad_(learned)
        y = _attend(q, k, v, bias, 0.0)
        group = 4 // kv_heads
        kk, vv = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        ref = F.scaled_dot_product_attention(q, kk, vv, attn_mask=bias)
        torch.testing.assert_close(y, ref)
        if learned:
            grads = torch.autograd.grad(y.sum(), (q, k, v, bias))
            ref_grads = torch.autograd.grad(ref.sum(), (q, k, v, bias))
            for a, b in zip(grads, ref_grads, strict=True):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("position", POSITIONS.names())
def test_a_model_built_to_load_gives_the_loaded_weights_logits(position, tied):
    # Built on the meta device, then loaded: the same logits as the model it came from, tables
    # that are no weights (sincos, RoPE, ALiBi) included, the head still tied where it was,
    # and nothing drawn from the caller's RNG.
    torch.manual_seed(0)
    cfg = tiny(position=position, norm="batchnorm" if position == "none" else "layernorm",
               tie_embeddings=tied)  # fmt: skip
    source = GPT(cfg, VOCAB).eval()
    rng = torch.get_rng_state()
    built = GPT.to_load(cfg, VOCAB)
    assert torch.equal(torch.get_rng_state(), rng)
    assert (built.lm_head.weight is built.wte.weight) == tied
    assert all(t.device.type == "cpu" for t in built.state_dict().values())
    built.load_state_dict(source.state_dict())
    idx = torch.randint(VOCAB, (2, 16))
    assert torch.equal(built.eval()(idx)[0], source(idx)[0])
