"""Checkpoint format versions: what a checkpoint's numbers mean, and which versions still mean it.

Every checkpoint (config.json) and export (gptcli.json) records the format it was written in.
When the maths of a variant changes, FORMAT moves and the change is listed in CHANGES: a
checkpoint of an older format that uses the changed variant computes something else under this
version, so loading it is refused with one line that says why (no exact conversion exists for
the changes listed so far; a change that has one gives it as `convert`). Checkpoints written
before formats existed have none and are format 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gptcli.config import ModelConfig
from gptcli.errors import GptcliError

FORMAT = 2
FORMAT_KEY = "checkpoint_format"


@dataclass(frozen=True)
class Change:
    key: str  # a model key, e.g. "position"
    value: Any  # the value whose maths changed
    what: str  # what changed, for the refusal
    # The exact conversion of an older checkpoint's weights, where one exists.
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None


CHANGES: dict[int, list[Change]] = {
    2: [
        Change(
            "position",
            "sincos",
            "the sin/cos table is now added at the token embeddings' init scale (rms 0.02 per "
            "channel) instead of at full size, and no change of weights reproduces the old sums",
        )
    ],
}


def format_of(info: dict[str, Any]) -> int:
    value = info.get(FORMAT_KEY, 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"'{FORMAT_KEY}' is {value!r}, not a format number")
    return value


def changes_since(fmt: int, model: ModelConfig) -> list[Change]:
    """The changes after format fmt that touch this model."""
    return [
        change
        for version, listed in sorted(CHANGES.items())
        if version > fmt
        for change in listed
        if getattr(model, change.key) == change.value
    ]


def check(fmt: int, model: ModelConfig, where: str) -> list[Change]:
    """Refuse a checkpoint this version cannot read as it was meant; return the conversions
    to apply to its weights (in order)."""
    if fmt > FORMAT:
        raise GptcliError(
            f"{where} was written in checkpoint format {fmt}, newer than this gptcli's "
            f"({FORMAT}); upgrade gptcli to load it"
        )
    changes = changes_since(fmt, model)
    for change in changes:
        if change.convert is None:
            raise GptcliError(
                f"{where} is a format-{fmt} checkpoint with model.{change.key}: {change.value}, "
                f"whose maths changed in format {_version_of(change)}: {change.what}; train it "
                "again with this version"
            )
    return changes


def _version_of(change: Change) -> int:
    return next(v for v, listed in CHANGES.items() if change in listed)
