"""The getting-started page, run as a reader would run it: every bash block after its install
section, in order, in one shell, in a fresh directory. The one change is the length of each
training (a few steps instead of 2000), made by a shell function that appends --set options to
`gptcli train`; every other command runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PAGE = REPO / "docs" / "getting-started.md"
TINY = ("--set train.max_iters=20 --set train.eval_interval=10 --set train.eval_iters=2 "
        "--set train.warmup_iters=2")  # fmt: skip


def tutorial_blocks(text: str) -> list[str]:
    """The bash blocks of every section but the install one."""
    blocks = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        if not section.startswith("Install"):
            blocks += re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)
    return blocks


def test_the_tutorial_is_the_page_s_blocks():
    blocks = tutorial_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) == 3
    assert "gptcli prepare --dataset shakespeare" in blocks[0]
    assert not any("make install" in b for b in blocks)


@pytest.mark.slow
def test_the_getting_started_page_runs_end_to_end(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    script = "\n".join([
        "set -euo pipefail",
        f'gptcli() {{ if [ "$1" = train ]; then command gptcli "$@" {TINY}; '
        'else command gptcli "$@"; fi; }',
        *tutorial_blocks(PAGE.read_text(encoding="utf-8")),
    ])  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GPTCLI_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "120"}  # fmt: skip
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for run in ("out/demo", "out/email"):
        assert (tmp_path / run / "checkpoints.json").is_file(), run
    assert "ROMEO:" in done.stdout  # the demo's sample starts with its prompt
    assert "def " in done.stdout
    assert "bits" in done.stdout.lower()  # eval's table
