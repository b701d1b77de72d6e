"""Model FLOPs utilisation: the training FLOPs a run achieves against its GPU's peak."""

from __future__ import annotations

import torch

# Peak dense FLOP/s of one GPU as (bf16/fp16 tensor cores, fp32 without TF32), from the vendor's
# datasheets, for the MFU estimate. Matched against torch's device name; the first match wins.
PEAK_FLOPS = {
    "A100": (312e12, 19.5e12),
    "H100 PCIe": (756e12, 51e12),
    "H100 NVL": (835e12, 60e12),
    "H100": (989e12, 67e12),
    "H200": (989e12, 67e12),
}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The GPU's peak dense FLOP/s at this precision, None where it is not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, fp32) in PEAK_FLOPS.items():
        if key in name:
            return fp32 if precision == "fp32" else half
    return None
