"""`gptcli export`: a checkpoint -> a Hugging Face layout (GPT-2, Llama or Qwen3), or safetensors
for any variant."""

from __future__ import annotations

from pathlib import Path

import typer

from gptcli.cli.app import app, show, table, user_errors


@app.command("export")
def export_(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="A run directory, a checkpoint, or an export."
    ),
    which: str = typer.Option("best", help="best | latest, when given a run directory."),
    out: Path = typer.Option(..., "--out", help="The directory to write (whole, atomically)."),
    fmt: str = typer.Option(
        "hf",
        "--format",
        help="hf: for transformers, the layout of the Hugging Face architecture that computes "
        "the model exactly (GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM; other "
        "variants are refused); safetensors: any variant, for gptcli.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an earlier export at --out (nothing else)."
    ),
) -> None:
    """Export a checkpoint: model.safetensors with gptcli.json (config and tokenizer), and for
    --format hf also config.json, generation_config.json and tokenizer files, so that
    transformers' AutoModelForCausalLM and AutoTokenizer load it with no custom code. Both
    formats load in `sample`, `eval`, `gptcli.load` and `train.init_from`."""
    from gptcli.interop.export import export

    with user_errors():
        result = export(checkpoint, out, which=which, fmt=fmt, force=force)
    show(
        table(
            f"exported {result.source} (step {result.step})",
            [
                ("format", result.format),
                ("parameters", f"{result.n_params:,}"),
                ("tokenizer", result.tokenizer),
                ("vocab", f"{result.vocab_size:,}"),
                ("files", ", ".join(result.files)),
                ("out dir", result.out_dir),
            ],
        )
    )
