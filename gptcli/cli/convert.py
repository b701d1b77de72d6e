"""`gptcli convert`: a Hugging Face GPT-2, Llama or Qwen3 directory -> a gptcli checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from gptcli.cli.app import app, show, table, user_errors


@app.command()
def convert(
    hf_dir: Path = typer.Argument(
        ...,
        help="A local Hugging Face model directory (GPT-2, Llama or Qwen3), or a gptcli export.",
    ),
    out_dir: Path = typer.Argument(..., help="Where the gptcli checkpoint goes."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace a checkpoint convert wrote earlier at OUT_DIR (nothing else).",
    ),
) -> None:
    """Convert a Hugging Face GPT-2, Llama or Qwen3 model (config.json + model.safetensors or
    pytorch_model.bin, and its tokenizer files) into a gptcli checkpoint for `sample` and
    `train.init_from`."""
    from gptcli import checkpoint
    from gptcli.interop import hf
    from gptcli.model.gpt import count_params_formula

    with user_errors():
        out = hf.convert(hf_dir, out_dir, force=force)
        ckpt = checkpoint.load(out)
    mc = ckpt.config.model
    show(
        table(
            f"converted {hf_dir}",
            [
                ("parameters", f"{count_params_formula(mc, ckpt.vocab_size):,}"),
                ("layers", mc.n_layer),
                ("heads", mc.n_head),
                ("width", mc.n_embd),
                ("context", mc.block_size),
                ("vocab", f"{ckpt.vocab_size:,}"),
                ("out dir", out),
            ],
        )
    )
