"""A prepared dataset directory: memory-mapped token files -> random (x, y) batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptcli.errors import GptcliError

SPLITS = ("train", "val")


class TokenDataset:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise GptcliError(
                f"{self.dir} is not a prepared dataset (no meta.json); create it with "
                f"`gptcli prepare ... --out {self.dir}` or fix data.dir"
            )
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
            self.vocab_size = int(self.meta["vocab_size"])
            self.tokenizer_spec = self.meta["tokenizer"]
            dtype = np.dtype(self.meta["dtype"])
            counts = {split: int(self.meta["tokens"][split]) for split in SPLITS}
        except (ValueError, KeyError, TypeError) as exc:
            raise GptcliError(
                f"{meta_path} is corrupt ({exc}); prepare the dataset again"
            ) from None
        self.splits: dict[str, np.ndarray] = {}
        for split in SPLITS:
            path = self.dir / f"{split}.bin"
            expected = counts[split]
            if not path.is_file() or path.stat().st_size != expected * dtype.itemsize:
                raise GptcliError(
                    f"{path} is missing or does not hold the {expected} tokens meta.json "
                    "promises; prepare the dataset again"
                )
            self.splits[split] = np.memmap(path, dtype=dtype, mode="r")

    def check_block_size(self, block_size: int) -> None:
        for split, data in self.splits.items():
            if len(data) <= block_size:
                raise GptcliError(
                    f"the {split} split of {self.dir} has {len(data)} tokens, too few for "
                    f"model.block_size={block_size} (it needs more than block_size); use a larger "
                    "corpus or a smaller block_size"
                )

    def batch(
        self, split: str, batch_size: int, block_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: x is tokens [i, i+T), y the same shifted by one."""
        data = self.splits[split]
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        return self.windows(split, starts.tolist(), block_size)

    def windows(
        self, split: str, starts: list[int], block_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows at these starts: x is tokens [i, i+T), y the same shifted by one."""
        data = self.splits[split]
        rows = np.stack([data[i : i + block_size + 1] for i in starts]).astype(np.int64)
        xy = torch.from_numpy(rows)
        return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()
