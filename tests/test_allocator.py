import json
import os
import platform
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a child, so the setting stays out of the test process: page faults per training step of a
# small model whose activations pass glibc's default 128 KB mmap threshold.
STEPS = """
import json, resource, sys, torch
from gptcli.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
from gptcli.config import ModelConfig
from gptcli.model import GPT
torch.manual_seed(0)
model = GPT(ModelConfig(n_layer=2, n_head=4, n_embd=128, block_size=64), 65)
x = torch.randint(0, 65, (12, 64))
def step():
    model(x, x)[1].backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps([kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20]))
"""


def faults_per_step(mode: str) -> tuple[bool, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                         cwd=REPO, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return tuple(json.loads(run.stdout))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_a_training_step_reuses_freed_memory_instead_of_faulting_in_new_pages():
    kept, kept_faults = faults_per_step("keep")
    _, default_faults = faults_per_step("default")
    assert kept
    assert default_faults > 100 and kept_faults * 5 < default_faults, (kept_faults, default_faults)


def test_a_users_own_malloc_settings_win():
    for name, value in (
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"),
    ):
        env = {**os.environ, name: value}
        code = "from gptcli.allocator import keep_freed_memory; print(keep_freed_memory())"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
        )
        assert out.stdout.strip() == "False", out.stderr


def test_the_commands_that_run_a_model_set_it_and_others_do_not():
    # sample exits at once after its output (os._exit), so it comes last and each call prints.
    code = """
import sys, gptcli.allocator as allocator
allocator.keep_freed_memory = lambda: print(sys.argv[1], flush=True)
from gptcli.cli import main
for command in ("prepare", "train", "compare", "sample"):
    sys.argv = ["gptcli", command, "--help"]
    try:
        main()
    except SystemExit:
        pass
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert [
        line
        for line in run.stdout.splitlines()
        if line in ("prepare", "train", "compare", "sample")
    ] == ["train", "sample"]
