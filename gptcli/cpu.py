"""Which x86 instruction set this process's CPU kernels run at, and what follows from it.

The machine's own set (torch's probes) is capped by what the user told the libraries to stop
at: oneDNN's ONEDNN_MAX_CPU_ISA (or its older name DNNL_MAX_CPU_ISA). A process so capped
computes as a lower CPU would, so it must also choose as one: bf16 counts as native, and oneDNN's
bf16 weight packing as available, only where the capped set has them. `make test-isa` runs the
precision-sensitive tests once per set this machine has, through the same variables
(`python -m gptcli.cpu` lists them).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

# oneDNN's names, lowest first: the levels gptcli tells apart.
LEVELS = ("avx2", "avx512_core", "avx512_core_bf16", "avx512_core_amx")
_PROBES = {
    "avx2": "_is_avx2_supported",
    "avx512_core": "_is_avx512_supported",
    "avx512_core_bf16": "_is_avx512_bf16_supported",
    "avx512_core_amx": "_is_amx_tile_supported",
}
# oneDNN's other names for a cap, as the level gptcli reads them as (below AVX2: no level).
_ALIASES = {
    "sse41": None, "avx": None, "avx2_vnni": "avx2", "avx2_vnni_2": "avx2",
    "avx512_core_vnni": "avx512_core", "avx512_core_fp16": "avx512_core_bf16",
    "avx10_1_512": "avx512_core_bf16", "avx10_1_512_amx": "avx512_core_amx",
    "avx512_core_amx_fp16": "avx512_core_amx", "avx10_1_512_amx_fp16": "avx512_core_amx",
    "avx10_2_512": "avx512_core_bf16", "avx10_2_512_amx_2": "avx512_core_amx",
}  # fmt: skip
_LABELS = {"avx2": "AVX2", "avx512_core": "AVX-512", "avx512_core_bf16": "AVX512-BF16",
           "avx512_core_amx": "AMX"}  # fmt: skip


def machine_levels() -> list[str]:
    """The levels this CPU has, lowest first (each includes the ones before it)."""
    have = []
    for level in LEVELS:
        probe = getattr(torch.cpu, _PROBES[level], None)
        if probe is None or not probe():
            break
        have.append(level)
    return have


def cap(environ: dict[str, str] | None = None) -> str | None:
    """The level the user capped oneDNN at; "" for a cap below AVX2; None for no cap."""
    env = os.environ if environ is None else environ
    raw = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().lower()
    if raw in ("", "all", "default"):
        return None
    if raw in LEVELS:
        return raw
    return _ALIASES.get(raw) or ""


def level(environ: dict[str, str] | None = None) -> str | None:
    """The level the kernels run at: the machine's highest, capped; None below AVX2."""
    have = machine_levels()
    limit = cap(environ)
    if limit is not None:
        have = [lv for lv in have if limit and LEVELS.index(lv) <= LEVELS.index(limit)]
    return have[-1] if have else None


def at_least(wanted: str, environ: dict[str, str] | None = None) -> bool:
    now = level(environ)
    return now is not None and LEVELS.index(now) >= LEVELS.index(wanted)


def has_native_bf16() -> bool:
    """AVX512-BF16 or AMX at the level the kernels run at: where bf16 matmuls can beat fp32.
    Below it bf16 on a CPU is emulated and slower."""
    return at_least("avx512_core_bf16")


def model_name() -> str:
    """The CPU's model name, with its family and model numbers: a virtual machine may name
    only "AMD EPYC", which covers chips of different speeds."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model"):
                fields.setdefault(key.strip(), value.strip())
            if not line.strip() and fields:
                break  # the first processor's block is enough
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    return name


def describe() -> str:
    """The CPU as a benchmark names it: model and the level its kernels run at (capped or not)."""
    now = level()
    capped = " (capped by ONEDNN_MAX_CPU_ISA)" if cap() is not None else ""
    return f"{model_name()}, {_LABELS[now] if now else 'below AVX2'}{capped}"


if __name__ == "__main__":
    # The caps `make test-isa` runs under, one a line, as ONEDNN_MAX_CPU_ISA spells them.
    sys.stdout.write("".join(f"{lv.upper()}\n" for lv in machine_levels()))
