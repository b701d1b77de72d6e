"""Shared fixtures: small generated corpora, prepared datasets and tiny configs."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the thread pool
# can stall a step for a second; subprocesses (CLI, torchrun) inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# auto's measured choices (gptcli.autotune) go to a cache of this test run's own, never the
# developer's, and every child process shares it.
os.environ["GPTCLI_CACHE_DIR"] = tempfile.mkdtemp(prefix="gptcli-test-cache-")
atexit.register(shutil.rmtree, os.environ["GPTCLI_CACHE_DIR"], True)

import pytest  # noqa: E402

from gptcli.config import config_from_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# CI passes these; a developer's run finds the same files beside the checkout.
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")


def gpt2_available() -> bool:
    try:
        from gptcli.data.tokenizers import GPT2Tokenizer

        GPT2Tokenizer()
        return True
    except Exception:
        return False


needs_gpt2 = pytest.mark.skipif(
    not gpt2_available(),
    reason="GPT-2 BPE files unavailable (no network and no TIKTOKEN_CACHE_DIR)",
)

WORDS = [
    "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran",
    "to", "see", "her", "big", "red", "ball", "in", "sun",
]  # fmt: skip


def make_text(n_lines: int = 400, seed: int = 0) -> str:
    """Learnable text: short sentences over a tiny vocabulary."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        lines.append(" ".join(words).capitalize() + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture
def char_data(tmp_path: Path, corpus: Path) -> Path:
    from gptcli.data.prepare import prepare

    return prepare(input_path=corpus, tokenizer="char", out_dir=tmp_path / "data").out_dir


def tiny_config(data_dir: Path, out_dir: Path, **sections):
    """A config small enough to train dozens of steps in about a second."""
    raw = {
        "data": {"dir": str(data_dir)},
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "bias": False},
        "train": {
            "batch_size": 8,
            "max_iters": 40,
            "lr": 3e-3,
            "min_lr": 3e-4,
            "warmup_iters": 5,
            "eval_interval": 20,
            "eval_iters": 4,
            "log_interval": 5,
            "device": "cpu",
            "precision": "fp32",  # auto measures which is faster here: pin it for every CPU
            "out_dir": str(out_dir),
        },
        "sample": {"max_new_tokens": 20},
    }
    for section, values in sections.items():
        raw[section].update(values)
    return config_from_dict(raw)
