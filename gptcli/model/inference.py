"""A model made ready to sample in lower precision: each matmul weight cast once to the dtype
that autocast casts it to at every call and, on a CPU with native bf16, packed once into
oneDNN's blocked layout. At one token per step the matmuls are bound by reading their weights,
so reading half the bytes, in the layout the kernel wants, is most of a step's time saved
(benchmarks/bench_sample_nanogpt.py). The logits are the same as under autocast alone (tested)."""

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gptcli import cpu


def for_inference(model: nn.Module, dtype: torch.dtype, pack: bool = False) -> None:
    """Replace every nn.Linear, in place, by a LowPrecisionLinear of dtype; pack: on a CPU with
    native bf16 (the caller knows), pack the weights for oneDNN. Inference only: a tied weight
    (lm_head's and wte's) is untied, the embedding keeping fp32 as under autocast."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, LowPrecisionLinear(child, dtype, pack))


def can_pack(dtype: torch.dtype) -> bool:
    """Whether this torch has oneDNN's packed linear for dtype (it is an internal op) and the
    kernels run at a level that has it (its bf16 path needs AVX-512: under
    ONEDNN_MAX_CPU_ISA=AVX2 packing raises)."""
    packing = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
    usable = dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
    return usable and packing is not None and cpu.at_least("avx512_core")


class LowPrecisionLinear(nn.Module):
    """A linear layer with its weight and bias in dtype, its input cast to dtype as autocast
    would. Same parameter names as nn.Linear, so state dicts read the same."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, pack: bool = False):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().to(dtype), requires_grad=False)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), False)
        # Packed for a batch of one row: a sampling step's shape (any shape computes the same).
        self.packed = None
        if pack and self.weight.device.type == "cpu" and can_pack(dtype):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def decode_attention(device: torch.device):
    """The attention kernels a KV cache should use on this device. On CUDA, torch prefers cuDNN's
    attention for bf16 and fp16, which builds a graph for each new sequence length (pytorch
    #155958): a cache meets a new length at every token. On an H200 a bf16 token took 22.1 ms
    with cuDNN's attention allowed, 3.4 ms without (fp32: 3.2 ms; benchmarks/bench_gpu.py
    --parts decode). Flash and memory-efficient attention need no build."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(backends)
