import json
import os
import platform
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a child, so the setting stays out of the test process, and before any large allocation has
# moved glibc's own thresholds: where does a 20 MB block come from, and does the heap keep it
# once freed (mallinfo2: hblkhd is the bytes in mmapped blocks, arena the heap's size).
BLOCK = """
import ctypes, json, sys
from gptcli.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 20 << 20
block = libc.malloc(size)
mmapped = libc.mallinfo2().hblkhd >= size
libc.free(block)
print(json.dumps([kept, mmapped, libc.mallinfo2().arena >= size]))
"""


def where_a_block_goes(mode: str) -> list[bool]:
    run = subprocess.run([sys.executable, "-c", BLOCK, mode], capture_output=True, text=True,
                         cwd=REPO)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_freed_blocks_up_to_32_mb_stay_in_the_heap_for_the_next_step():
    # By default a 20 MB block is an mmap of its own, returned to the kernel when freed (and
    # faulted in afresh next time); kept, it comes from the heap, which keeps it after free.
    assert where_a_block_goes("default") == [False, True, False]
    assert where_a_block_goes("keep") == [True, False, True]


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


@pytest.mark.slow
def test_train_alone_sets_it():
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
    ] == ["train"]
