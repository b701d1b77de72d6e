"""`gptcli export`: a checkpoint -> a directory other tools load, and gptcli reads back.

Two formats, both with the weights in model.safetensors and gptcli.json (the gptcli config, vocab
size, tokenizer spec and where each tensor is stored; gptcli.checkpoint reads it back):
- hf: the layout of the Hugging Face architecture that computes the model exactly (GPT-2,
  Llama or Qwen3; see families.py), with config.json, generation_config.json and tokenizer
  files, which transformers loads with no custom code;
- safetensors: any variant, in gptcli's own tensor names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gptcli import atomic, checkpoint
from gptcli.checkpoint import formats
from gptcli.config import Config, ModelConfig
from gptcli.data.tokenizers import Tokenizer, tokenizer_from_spec
from gptcli.errors import GptcliError
from gptcli.interop import hf, hf_tokenizer
from gptcli.interop.architectures import family_for
from gptcli.interop.families import Family, Place
from gptcli.model import GPT, count_params_formula, mup

FORMATS = ("hf", "safetensors")
_VERSION = 1

@dataclass
class ExportResult:
    out_dir: Path
    format: str
    source: Path
    step: int
    tokenizer: str
    vocab_size: int
    n_params: int
    files: list[str]
    architecture: str | None = None  # the Hugging Face class, for --format hf


def export(
    path: str | Path,
    out_dir: str | Path,
    *,
    which: str = "best",
    fmt: str = "hf",
    force: bool = False,
) -> ExportResult:
    """Write the checkpoint at path (a run directory, a checkpoint or an export) into out_dir as
    fmt, atomically: out_dir holds the whole export or what it held before."""
    if fmt not in FORMATS:
        raise GptcliError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out_dir = Path(out_dir)
    src = checkpoint.load(path, which)
    tokenizer = tokenizer_from_spec(src.tokenizer_spec)
    mc = src.config.model
    family = None
    state = None
    if fmt == "hf":
        if mup.enabled(mc):  # scales no architecture has, folded into the weights
            mc, state = _fold_mup(mc, _checked_state(src), src.dir)
        family = _family(mc, tokenizer)
    _check_out(out_dir, src.dir, force)
    state = _checked_state(src) if state is None else state
    if family is not None:
        table = family.table(mc, list(state))
        extra = family.extra_tensors(mc, state)
    else:  # gptcli's names; a tied lm_head is stored once, as wte
        table = {name: Place((name,)) for name in state}
        if mc.tie_embeddings:
            table["lm_head.weight"] = Place(("wte.weight",))
        extra = {}
    with atomic.new_dir(out_dir) as tmp:
        _save_safetensors(tmp / checkpoint.EXPORT_WEIGHTS, state, table, extra)
        if family is not None:
            _write_hf(tmp, src, tokenizer, family)
        atomic.write_json(
            tmp / checkpoint.EXPORT_FILE,
            {
                "gptcli_export": _VERSION,
                "format": fmt,
                "step": src.step,
                formats.FORMAT_KEY: formats.FORMAT,
                "vocab_size": src.vocab_size,
                "tokenizer": src.tokenizer_spec,
                "config": replace(src.config, model=mc).to_dict(),
                "architecture": family.architecture if family else None,
                "tensors": {name: place.record() for name, place in table.items()},
            },
        )
        files = sorted(p.name for p in tmp.iterdir())
    n_params = count_params_formula(mc, src.vocab_size)
    return ExportResult(
        out_dir, fmt, src.dir, src.step, tokenizer.name, src.vocab_size, n_params, files,
        family.architecture if family else None,
    )  # fmt: skip


def _family(mc: ModelConfig, tokenizer: Tokenizer) -> type[Family]:
    """The Hugging Face architecture that computes mc exactly, or a one-line refusal."""
    if problem := hf_tokenizer.hf_problem(tokenizer):
        raise GptcliError(f"cannot export as hf: {problem}; --format safetensors takes any variant")
    return family_for(mc)


def _check_out(out_dir: Path, source_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise GptcliError(f"--out {out_dir} exists and is not a directory")
    out, src = out_dir.resolve(), source_dir.resolve()
    if out == src or out in src.parents:
        raise GptcliError(f"--out {out_dir} holds the checkpoint being exported; pick another")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise GptcliError(f"--out {out_dir} is not empty; pass --force to replace it")
        # --force replaces an earlier export, never an arbitrary directory (a typo of --out must
        # not delete a home directory).
        if not (out_dir / checkpoint.EXPORT_FILE).is_file():
            raise GptcliError(
                f"--out {out_dir} is not empty and holds no earlier export "
                f"({checkpoint.EXPORT_FILE}); --force replaces only an export: pick an empty or "
                "new directory"
            )


def _fold_mup(mc: ModelConfig, state: dict[str, torch.Tensor], where: Path):
    """A µP model as a standard one computing the same logits: its 1/d attention scale moved
    into q's weights (q_norm's gain under QK-norm, else c_attn's q rows), its readout's 1/m into
    an untied head. Tied, the head is the embedding too: refused."""
    if mc.tie_embeddings:
        raise GptcliError(
            f"cannot export {where} as hf: a µP model scales its logits by "
            f"{mup.output_mult(mc):g} (model.mup_base_width / n_embd), which no Hugging Face "
            "architecture does and, with tied embeddings, no weight can carry; use --format "
            "safetensors, or train with model.tie_embeddings false"
        )
    state, scale = dict(state), mup.query_scale(mc)
    for i in range(mc.n_layer):
        at = f"blocks.{i}.attn."
        if mc.qk_norm != "none":
            state[at + "q_norm.weight"] = state[at + "q_norm.weight"] * scale
        else:
            for name in ("c_attn.weight", "c_attn.bias"):
                if at + name in state:
                    folded = state[at + name].clone()
                    folded[: mc.n_embd] *= scale
                    state[at + name] = folded
    state["lm_head.weight"] = state["lm_head.weight"] * mup.output_mult(mc)
    return replace(mc, parametrization="standard", mup_base_width=None), state


def _checked_state(src: checkpoint.Checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, refused unless they are exactly what its config builds."""
    state = src.model_state()
    with torch.device("meta"):
        wanted = GPT(src.config.model, src.vocab_size).state_dict()
    for name, target in wanted.items():
        if name not in state or tuple(state[name].shape) != tuple(target.shape):
            got = tuple(state[name].shape) if name in state else "nothing"
            raise GptcliError(
                f"checkpoint {src.dir} does not fit its own config: {name!r} is {got}, "
                f"the config implies {tuple(target.shape)}"
            )
    if extra := sorted(set(state) - set(wanted)):
        raise GptcliError(f"checkpoint {src.dir} holds unexpected tensor {extra[0]!r}")
    return state


def _write_hf(tmp: Path, src: checkpoint.Checkpoint, tokenizer: Tokenizer, family) -> None:
    mc = src.config.model
    atomic.write_json(tmp / hf.CONFIG_FILE, family.hf_config(mc, src.vocab_size, tokenizer))
    atomic.write_json(tmp / "generation_config.json", generation_config(src.config, tokenizer))
    for name, content in hf_tokenizer.tokenizer_files(tokenizer, mc.block_size).items():
        if isinstance(content, str):
            atomic.write_bytes(tmp / name, content.encode("utf-8"))
        else:
            atomic.write_json(tmp / name, content)


def _special_ids(tokenizer: Tokenizer) -> tuple[int, int | None]:
    """(what generation starts from, what ends a document or None) for transformers."""
    return tokenizer.start_ids()[0], tokenizer.separator_id


def generation_config(cfg: Config, tokenizer: Tokenizer) -> dict[str, Any]:
    """gptcli's sampling defaults as transformers' generation_config.json."""
    bos, eos = _special_ids(tokenizer)
    sc = cfg.sample
    gen: dict[str, Any] = {"bos_token_id": bos, "eos_token_id": eos}
    if sc.temperature > 0:
        # top_k 0 turns transformers' own default of 50 off, as top_k null does in gptcli.
        gen.update(do_sample=True, temperature=sc.temperature, top_k=sc.top_k or 0, top_p=sc.top_p)
    else:
        gen["do_sample"] = False
    return gen


def _save_safetensors(
    path: Path,
    state: dict[str, torch.Tensor],
    table: dict[str, Place],
    extra: dict[str, torch.Tensor],
) -> None:
    from safetensors.torch import save_file

    tensors = dict(extra)
    for name, place in table.items():
        for key, tensor in place.split(state[name]).items():
            if key not in tensors:  # a tied lm_head: wte's tensor, already there
                tensors[key] = tensor.detach().contiguous()
    # transformers refuses a safetensors file whose metadata does not name its framework.
    save_file(tensors, path, metadata={"format": "pt"})
