"""gptcli.cpu: the instruction-set level the kernels run at, capped as oneDNN is capped."""

import os
import subprocess
import sys

import pytest
import torch

from gptcli import cpu

from .conftest import REPO


@pytest.fixture
def amx_machine(monkeypatch):
    monkeypatch.setattr(cpu, "machine_levels", lambda: list(cpu.LEVELS))


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("AVX2", "avx2"),
        ("AVX512_CORE", "avx512_core"),
        ("avx512_core_bf16", "avx512_core_bf16"),
        ("AVX512_CORE_AMX", "avx512_core_amx"),
        ("AVX512_CORE_VNNI", "avx512_core"),  # oneDNN's other names read as their level
        ("AVX10_1_512_AMX", "avx512_core_amx"),
        ("SSE41", None),  # below AVX2
        ("DEFAULT", "avx512_core_amx"),
        ("", "avx512_core_amx"),
    ],
)
def test_the_cap_lowers_the_level(amx_machine, value, level):
    assert cpu.level({"ONEDNN_MAX_CPU_ISA": value}) == level
    assert cpu.level({"DNNL_MAX_CPU_ISA": value}) == level  # oneDNN's older name


def test_the_cap_never_raises_the_level(monkeypatch):
    monkeypatch.setattr(cpu, "machine_levels", lambda: ["avx2", "avx512_core"])
    assert cpu.level({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == "avx512_core"
    assert cpu.level({}) == "avx512_core"
    monkeypatch.setattr(cpu, "machine_levels", lambda: [])
    assert cpu.level({}) is None and not cpu.at_least("avx2", {})


def test_native_bf16_and_packing_follow_the_cap(amx_machine, monkeypatch):
    from gptcli.model.inference import can_pack

    for value, native, packs in (("AVX512_CORE_AMX", True, True),
                                 ("AVX512_CORE_BF16", True, True),
                                 ("AVX512_CORE", False, True),
                                 ("AVX2", False, False)):  # fmt: skip
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", value)
        assert cpu.has_native_bf16() == native, value
        assert can_pack(torch.bfloat16) == (packs and torch.backends.mkldnn.is_available())
        assert "capped by ONEDNN_MAX_CPU_ISA" in cpu.describe()


@pytest.mark.slow
def test_the_machine_levels_are_cumulative_and_listed_for_make():
    have = cpu.machine_levels()
    assert have == list(cpu.LEVELS[: len(have)])
    out = subprocess.run([sys.executable, "-m", "gptcli.cpu"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout  # fmt: skip
    assert out.split() == [lv.upper() for lv in have]


@pytest.mark.slow
def test_bf16_sampling_runs_under_an_avx2_cap(tmp_path):
    """oneDNN's bf16 weight packing raises below AVX-512 ("bf16 path needs the cpu support
    avx_ne_convert or avx512bw..."): capped at AVX2, bf16 sampling must not pack, and runs."""
    code = (
        "import torch, copy\n"
        "from gptcli.config import ModelConfig\nfrom gptcli.model import GPT\n"
        "from gptcli.generate import LoadedModel, sampling_precision\n"
        "from gptcli.model.inference import LowPrecisionLinear\n"
        "m = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=8), 20).eval()\n"
        "assert sampling_precision('auto', torch.device('cpu'), m) == 'fp32'\n"
        "lm = LoadedModel(m, None, None, 'bf16')\n"
        "assert all(x.packed is None for x in m.modules() if isinstance(x, LowPrecisionLinear))\n"
        "from gptcli.generate import generate\n"
        "idx = torch.zeros(1, 1, dtype=torch.long)\n"
        "out = list(generate(m, idx, 5, autocast_ctx=lm._autocast))\n"
        "print(len(out))\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "5"
