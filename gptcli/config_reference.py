"""What every config key means, beside what config.py knows of it (type, default, accepted
values): the documentation site's config reference is generated from these two, so it cannot
drift from the code. A test keeps MEANINGS to exactly the keys config.py defines."""

from __future__ import annotations

from gptcli.config import reference

MEANINGS: dict[str, str] = {
    "data.dir": (
        "the prepared dataset to train on: a directory `gptcli prepare` wrote (train.bin, "
        "val.bin, meta.json); the vocabulary size comes from its meta.json"
    ),
    "data.order": (
        "`random` (each sequence a window at a random place, nanoGPT's) or `epoch` (the train "
        "split cut into block-size windows, each read once a pass in an order drawn from the "
        "seed: a run shorter than the corpus sees no token twice; the start says how many passes "
        "the run makes)"
    ),
    "model.n_layer": "transformer blocks",
    "model.n_head": "attention heads per block; must divide `n_embd`",
    "model.n_embd": "the residual stream's width",
    "model.block_size": "the context length in tokens (positions a learned table has rows for)",
    "model.dropout": (
        "dropout on attention weights, residual branches and embeddings while training"
    ),
    "model.bias": "biases in Linear layers and norms",
    "model.position": "how the model knows where a token is: see [the variants](variants.md)",
    "model.norm": (
        "the normalization in each block and before the head: see [the variants](variants.md)"
    ),
    "model.norm_placement": "`pre` (GPT-2) or `post` (original Transformer)",
    "model.tie_embeddings": "share the token embedding with the output head",
    "model.n_kv_head": (
        "key/value heads; null: `n_head` (multi-head); must divide `n_head`; 1 is multi-query"
    ),
    "model.qk_norm": (
        "`none`, `rmsnorm` (an RMSNorm per head on q and k, before the position rotation, as "
        "Qwen3)"
    ),
    "model.mlp": (
        "`standard` (one hidden layer with `activation`), `swiglu`, `geglu` (gated: down(act(gate"
        " x) · up x) with SiLU / GELU)"
    ),
    "model.mlp_ratio": (
        "MLP hidden width = ratio x `n_embd`; a gated MLP takes 2/3 of that, rounded to the "
        "nearest multiple of 8, so it has the standard MLP's parameter count"
    ),
    "model.mlp_hidden": "the hidden width itself (not rescaled or rounded); null: from `mlp_ratio`",
    "model.activation": (
        "the standard MLP's: `gelu_tanh` (GPT-2), `gelu`, `relu`, `relu2` (squared ReLU), `silu`"
    ),
    "model.rope_base": "RoPE's frequency base (`position: rope`)",
    "model.relative_buckets": "distance buckets of `position: relative`",
    "model.relative_max_distance": (
        "distances beyond it share the last bucket (`position: relative`)"
    ),
    "model.parametrization": (
        "`standard`, or `mup` (µP, Yang et al. 2022, as the `mup` library writes it: with m = "
        "`n_embd / mup_base_width`, the blocks' matrices start at std 0.02/sqrt(m) and learn at "
        "`lr / m` under AdamW (`muon_lr` unscaled under Muon, whose update already has µP's "
        "spectral size), logits times 1/m, attention scores q.k/d instead of /sqrt(d)); an HF "
        "export folds the scales into the weights, and is refused with tied embeddings"
    ),
    "model.mup_base_width": (
        "µP's base width: the `n_embd` the learning rate was tuned at; required with `mup`"
    ),
    "train.batch_size": "sequences per micro-batch",
    "train.grad_accum": "micro-batches per optimizer step (all processes together)",
    "train.tokens_per_step": (
        "tokens per optimizer step, all processes together; when set it replaces `grad_accum` "
        "(grad_accum = tokens_per_step / (batch_size x block_size)) and must be a multiple of "
        "batch_size x block_size x processes"
    ),
    "train.max_iters": "optimizer steps",
    "train.flops_budget": (
        "instead of `max_iters` (and `lr_decay_iters`): the training FLOPs to spend, counted from"
        " the model (`gptcli/compute.py`); the summary says the steps it chose. Giving it beside "
        "`max_iters`, `lr_decay_iters` or `tokens_per_param` is refused (`--set "
        "train.max_iters=null` drops a config file's)"
    ),
    "train.tokens_per_param": (
        "instead of `max_iters`: training tokens per parameter (Chinchilla's optimum is about "
        "20); the same rules as `flops_budget`"
    ),
    "train.lr": "peak learning rate",
    "train.min_lr": "the learning rate the decay ends at, <= `lr`",
    "train.warmup_iters": "linear warmup steps",
    "train.lr_decay_iters": "the cosine or linear decay ends here (null: `max_iters`)",
    "train.optimizer": (
        "`adamw`, or `muon`: torch.optim.Muon (orthogonalised momentum) for the linear layers "
        "inside the blocks, AdamW at `lr` for the embedding, head, norms, biases and position "
        "tables (as modded-nanogpt and nanochat)"
    ),
    "train.muon_lr": (
        "Muon's learning rate (nanochat's), moved by the schedule as `lr` is (`muon_lr / lr` x "
        "the schedule's rate); torch's shape adjustment, sqrt(max(1, rows / columns)), on top"
    ),
    "train.muon_momentum": "Muon's momentum",
    "train.muon_nesterov": "Nesterov momentum for Muon",
    "train.muon_ns_steps": "Newton-Schulz iterations per update (torch's, in bf16)",
    "train.muon_weight_decay": (
        "Muon's decoupled weight decay (nanochat and modded-nanogpt use none)"
    ),
    "train.schedule": (
        "after the warmup: `cosine` (to `min_lr` at `lr_decay_iters`), `linear` (a straight line "
        "there), `constant`, or `wsd` (warmup-stable-decay: `lr` until the last `cooldown` steps,"
        " then a straight line to `min_lr` at `max_iters`; a run resumed with a longer "
        "`max_iters` before its decay began goes on as if started with it)"
    ),
    "train.cooldown": (
        "`wsd`'s final decay: a fraction of `max_iters` below 1, else a number of steps; longer "
        "than the run after its warmup is refused"
    ),
    "train.weight_decay": "AdamW decay on matrices and embeddings (never biases or norms)",
    "train.beta1": "AdamW beta1",
    "train.beta2": "AdamW beta2",
    "train.grad_clip": "max gradient norm; 0 disables",
    "train.eval_interval": "steps between evaluations (and checkpoints)",
    "train.eval_iters": "batches per evaluation, per split",
    "train.log_interval": "steps between loss measurements",
    "train.tensorboard": (
        "also write TensorBoard event files to `OUT_DIR/tensorboard/` (needs `pip install "
        "'gptcli[tensorboard]'`; `--tensorboard` sets it)"
    ),
    "train.loggers": (
        "experiment trackers that mirror `metrics.jsonl`: `mlflow`, `wandb` (need `pip install "
        "'gptcli[mlflow]'` / `'gptcli[wandb]'`); `--set train.loggers=mlflow,wandb`"
    ),
    "train.final_eval": (
        "score the final checkpoint on the whole val split (as `gptcli eval` does) into the final"
        " table, `metrics.jsonl` and `eval.json`; turn off for huge splits"
    ),
    "train.device": "`auto` (cuda, then mps, then cpu), `cpu`, `cuda`, `cuda:N`, `mps`",
    "train.precision": (
        "`auto` (bf16 on GPUs that support it; on CPUs with native bf16, AVX512-BF16 or AMX, the "
        "faster of fp32 and bf16 for this model, measured once per machine and remembered: see "
        "[how auto chooses on a CPU](../how-to/sample.md#how-auto-chooses-on-a-cpu); else "
        "fp32), `fp32`, `bf16`, `fp16` (CUDA only, with a GradScaler)"
    ),
    "train.compile": "`torch.compile` the model",
    "train.threads": (
        "CPU threads per process, at most; null: torch's default for one process, and the node's "
        "cores divided by the processes under torchrun; either way a training takes only its "
        "share of the cores while other gptcli trainings run on them"
    ),
    "train.share_cores": (
        "how trainings on the same CPU cores share them: `threads` (each takes the cores / "
        "trainings), `turns` (one step at a time each, with a lone run's threads once another "
        "training is seen taking turns), `auto` (turns where the trainings outnumber the "
        "physical cores under hyperthreads, else threads; see the GPU and torchrun guide)"
    ),
    "train.seed": "seeds init, dropout and the batch sampler",
    "train.out_dir": "the run directory",
    "train.init_from": (
        "start from these weights (a gptcli checkpoint or a Hugging Face GPT-2 directory) instead"
        " of a random init"
    ),
    "sample.max_new_tokens": "tokens to generate",
    "sample.temperature": "divides the logits before sampling; 0 is greedy",
    "sample.top_k": "keep the k most likely tokens; null disables",
    "sample.top_p": (
        "nucleus sampling: keep the most likely tokens whose probabilities sum to this; 1 "
        "disables"
    ),
    "sample.seed": "the same seed gives the same sample",
    "sample.num_samples": "samples per call, generated as one batch",
}


def markdown(extra_choices: dict[str, list[str]] | None = None) -> str:
    """The reference as one Markdown table per section (key, type, default, accepted, meaning).
    extra_choices: the names other packages own, e.g. gptcli.model.choices()."""
    out: list[str] = []
    section = None
    for key, kind, default, accepted in reference(extra_choices):
        if key.split(".")[0] != section:
            section = key.split(".")[0]
            out += ["", f"## `{section}`", "", "| key | type | default | accepted | meaning |",
                    "|---|---|---|---|---|"]  # fmt: skip
        cells = [f"`{key}`", kind, f"`{default}`", accepted or "-", MEANINGS[key]]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out).lstrip("\n") + "\n"
