"""What `gptcli inspect` looks at: a trained model and its tokenizer, named for titles and files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gptcli import checkpoint
from gptcli.config import ModelConfig
from gptcli.data.tokenizers import Tokenizer
from gptcli.model import GPT


@dataclass
class Subject:
    model: GPT
    tokenizer: Tokenizer
    ckpt: checkpoint.Checkpoint
    run_dir: Path

    @property
    def title(self) -> str:
        return f"{self.run_dir.name} (step {self.ckpt.step}): {variant_line(self.model.cfg)}"

    def default_out(self, subject: str) -> Path:
        return self.run_dir / "inspect" / f"{subject}.png"


def variant_line(mc: ModelConfig) -> str:
    """The variant names, as one line for titles (the block's parts where not GPT-2's)."""
    from gptcli.model.mlp import hidden_size

    line = f"position={mc.position}, norm={mc.norm} ({mc.norm_placement})"
    kv = mc.kv_heads
    if kv != mc.n_head:
        line += f", kv heads={kv}/{mc.n_head}"
    if mc.qk_norm != "none":
        line += f", qk_norm={mc.qk_norm}"
    mlp = f"activation={mc.activation}" if mc.mlp == "standard" else f"mlp={mc.mlp}"
    return f"{line}, {mlp} (hidden {hidden_size(mc)})"


def load_subject(path: str | Path, which: str = "best") -> Subject:
    """A checkpoint's model on the CPU in eval mode (pictures need no GPU)."""
    from gptcli.checkpoint import load_model
    from gptcli.evaluate import run_dir_of

    model, tokenizer, ckpt = load_model(path, which, "cpu")
    return Subject(model, tokenizer, ckpt, run_dir_of(ckpt.dir))
