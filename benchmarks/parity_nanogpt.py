"""Step-for-step parity with nanoGPT: the same initial weights and batches, the losses compared.

    python benchmarks/parity_nanogpt.py --nanogpt PATH/TO/nanoGPT [--steps 300]
        [--data data/shakespeare_char] [--adam fused|foreach] [--precision fp32|bf16]

nanoGPT's own model.py builds and initialises the model (seed 1337); its weights are copied into
gptcli's GPT built from configs/shakespeare-char-cpu.yaml. Each side then trains with its own
optimizer setup (nanoGPT's configure_optimizers; gptcli's make_optimizer, fused AdamW on CPU by
default or --adam foreach, the multi-tensor kernel nanoGPT gets on CPU), its own gradient clipping
and gptcli's schedule (lr_at, the same formula as nanoGPT's get_lr), on identical batches drawn
like nanoGPT's get_batch. It prints the loss of both at intervals and the largest difference.
With --adam foreach and fp32 the two are expected to agree exactly: any difference then is a
difference in the model or the update, not rounding.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptcli.config import load_config  # noqa: E402
from gptcli.data.dataset import TokenDataset  # noqa: E402
from gptcli.model import GPT  # noqa: E402
from gptcli.training.optim import make_optimizer, set_lr  # noqa: E402
from gptcli.training.schedules import lr_at  # noqa: E402


def nanogpt_model(nanogpt: Path, cfg, vocab_size: int):
    spec = importlib.util.spec_from_file_location("nanogpt_model", nanogpt / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mc = cfg.model
    args = dict(n_layer=mc.n_layer, n_head=mc.n_head, n_embd=mc.n_embd, block_size=mc.block_size,
                bias=mc.bias, vocab_size=vocab_size, dropout=mc.dropout)  # fmt: skip
    torch.manual_seed(1337)
    return module.GPT(module.GPTConfig(**args))


def gptcli_name(nano_name: str) -> str:
    name = nano_name.removeprefix("transformer.").replace("h.", "blocks.", 1)
    return "positions.wpe.weight" if name == "wpe.weight" else name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nanogpt", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--data", type=Path, default=REPO / "data/shakespeare_char")
    ap.add_argument("--adam", choices=["fused", "foreach"], default="fused")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--every", type=int, default=25)
    args = ap.parse_args()

    cfg = load_config(REPO / "configs/shakespeare-char-cpu.yaml")
    tc, block = cfg.train, cfg.model.block_size
    data = TokenDataset(args.data)
    nano = nanogpt_model(args.nanogpt, cfg, data.vocab_size)
    ours = GPT(cfg.model, data.vocab_size)
    weights = {gptcli_name(k): v for k, v in nano.state_dict().items() if not k.endswith(".bias")}
    ours.load_state_dict(weights, strict=True)

    betas = (tc.beta1, tc.beta2)
    nano_opt = nano.configure_optimizers(tc.weight_decay, tc.lr, betas, "cpu")
    our_opt = make_optimizer(ours, tc, torch.device("cpu"))
    if args.adam == "foreach":  # torch's multi-tensor AdamW, gptcli's parameter groups
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}
                  for g in our_opt.param_groups]  # fmt: skip
        our_opt = torch.optim.AdamW(groups, lr=tc.lr, betas=betas, foreach=True)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()
    )

    train = np.asarray(data.splits["train"]).astype(np.int64)
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for step in range(args.steps):
        ix = torch.randint(len(train) - block, (tc.batch_size,), generator=gen)
        x = torch.stack([torch.from_numpy(train[i : i + block]) for i in ix])
        y = torch.stack([torch.from_numpy(train[i + 1 : i + 1 + block]) for i in ix])
        lr = lr_at(step, tc)
        losses = []
        for model, opt, foreach in ((nano, nano_opt, None), (ours, our_opt, True)):
            set_lr(opt, lr)
            with autocast:
                _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip, foreach=foreach)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        worst = max(worst, abs(losses[0] - losses[1]))
        if step % args.every == 0 or step == args.steps - 1:
            print(f"step {step:4d}  nanoGPT {losses[0]:.6f}  gptcli {losses[1]:.6f}  "
                  f"diff {losses[1] - losses[0]:+.2e}")  # fmt: skip
    print(f"largest |loss difference| over {args.steps} steps "
          f"(gptcli AdamW {args.adam}, {args.precision}): {worst:.3e}")  # fmt: skip


if __name__ == "__main__":
    main()
