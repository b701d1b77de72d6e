"""The fused norms the model runs equal their written-out references, forward and backward."""

import pytest
import torch

from gptcli.model.norms import LayerNorm, ReferenceLayerNorm, ReferenceRMSNorm, RMSNorm

PAIRS = [
    (LayerNorm, ReferenceLayerNorm, True),
    (LayerNorm, ReferenceLayerNorm, False),
    (RMSNorm, ReferenceRMSNorm, False),
]


@pytest.mark.parametrize(("fused_cls", "ref_cls", "bias"), PAIRS)
def test_fused_norm_equals_reference_forward_and_gradients(fused_cls, ref_cls, bias):
    torch.manual_seed(0)
    fused, ref = fused_cls(48, bias=bias), ref_cls(48, bias=bias)
    with torch.no_grad():
        for p in fused.parameters():
            p.normal_()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(4, 9, 48) * 2 + 0.5
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fused(xa), ref(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-6, atol=1e-6)
    upstream = torch.randn_like(ya)
    (ya * upstream).sum().backward()
    (yb * upstream).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-6, atol=1e-6)
    for (name, pa), pb in zip(fused.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-6, atol=1e-6, msg=name)


@pytest.mark.parametrize(("fused_cls", "ref_cls", "bias"), PAIRS)
def test_fused_norm_keeps_the_input_dtype_under_bf16(fused_cls, ref_cls, bias):
    x = torch.randn(2, 3, 16, dtype=torch.bfloat16)
    fused, ref = fused_cls(16, bias=bias), ref_cls(16, bias=bias)
    assert fused(x).dtype == torch.bfloat16
    torch.testing.assert_close(fused(x), ref(x))
