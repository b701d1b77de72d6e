"""Model FLOPs utilisation: the training FLOPs a run achieves against its GPU's peak."""

from __future__ import annotations

import torch

from gptcli.model import GPT

# Peak dense FLOP/s of one GPU as (bf16/fp16 tensor cores, fp32 without TF32), from the vendor's
# datasheets, for the MFU estimate. Matched against torch's device name; the first match wins.
PEAK_FLOPS = {
    "A100": (312e12, 19.5e12),
    "H100 PCIe": (756e12, 51e12),
    "H100 NVL": (835e12, 60e12),
    "H100": (989e12, 67e12),
    "H200": (989e12, 67e12),
}


def flops_per_token(model: GPT) -> float:
    """Training FLOPs per token (PaLM's appendix B, as nanoGPT): 6 per weight for the matmuls
    forward and backward, plus 12 x layers x heads x head size x context for attention.
    Position tables are lookups, not matmuls, so they are left out of the weights."""
    mc = model.cfg
    weights = model.num_params() - sum(p.numel() for p in model.positions.parameters())
    return 6 * weights + 12 * mc.n_layer * mc.n_embd * mc.block_size


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The GPU's peak dense FLOP/s at this precision, None where it is not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, fp32) in PEAK_FLOPS.items():
        if key in name:
            return fp32 if precision == "fp32" else half
    return None
