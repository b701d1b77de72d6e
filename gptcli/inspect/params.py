"""`inspect params`: where a model's parameters are, module by module, and what each part costs.

"Without embeddings" leaves out the token embedding and learned position vectors (Kaplan et
al.'s non-embedding count, the one scaling laws use); a tied LM head shares the token
embedding's matrix, so it is listed once, as the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from gptcli.inspect.subject import variant_line
from gptcli.model import GPT
from gptcli.model.mlp import hidden_size
from gptcli.model.norms import NORMS

PARTS = ("token embedding", "positions", "attention", "mlp", "norms", "lm head")


@dataclass
class ModuleRow:
    name: str
    kind: str
    shapes: list[tuple[int, ...]]
    params: int
    part: str
    note: str = ""


@dataclass
class ParamReport:
    variants: dict[str, str]
    variant_line: str
    rows: list[ModuleRow]
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def non_embedding(self) -> int:
        return self.total - self.parts["token embedding"] - self._position_vectors

    @property
    def _position_vectors(self) -> int:
        # Learned absolute positions are an embedding; a relative bias table is not.
        return sum(r.params for r in self.rows if r.name == "positions.wpe")

    def record(self) -> dict[str, Any]:
        return {
            "variants": self.variants,
            "modules": [
                {"name": r.name, "kind": r.kind, "shapes": [list(s) for s in r.shapes],
                 "params": r.params, "part": r.part, "note": r.note}
                for r in self.rows
            ],
            "parts": self.parts,
            "total": self.total,
            "non_embedding": self.non_embedding,
        }  # fmt: skip


def _part(name: str, module: nn.Module) -> str:
    if name == "wte":
        return "token embedding"
    if name.startswith("positions"):
        return "positions"
    if name == "lm_head":
        return "lm head"
    if type(module) in {NORMS[n] for n in NORMS.names()}:
        return "norms"
    return "attention" if ".attn." in f".{name}." else "mlp"


def param_report(model: GPT) -> ParamReport:
    """Every module that owns parameters, in model order; shared tensors counted once."""
    mc = model.cfg
    variants = {"position": mc.position, "norm": mc.norm, "norm_placement": mc.norm_placement,
                "n_kv_head": mc.kv_heads, "qk_norm": mc.qk_norm, "mlp": mc.mlp,
                "mlp_hidden": hidden_size(mc), "activation": mc.activation}  # fmt: skip
    report = ParamReport(variants, variant_line(mc), [], dict.fromkeys(PARTS, 0))
    owner: dict[int, str] = {}
    for name, module in model.named_modules():
        own = [(pname, p) for pname, p in module.named_parameters(recurse=False)]
        if not own:
            continue
        shapes, count, notes = [], 0, []
        for pname, p in own:
            if id(p) in owner:
                notes.append(f"{pname} tied to {owner[id(p)]}")
                continue
            owner[id(p)] = f"{name}.{pname}"
            shapes.append(tuple(p.shape))
            count += p.numel()
        part = _part(name, module)
        report.rows.append(ModuleRow(name, type(module).__name__, shapes, count, part,
                                     "; ".join(notes)))  # fmt: skip
        report.parts[part] += count
    return report
