"""Name -> class registries: each model variant is a small class plus one registry line.

A model part's registry (positions, norms, placements, QK-norms, MLPs, activations) asks every
entry the same questions, declared by Part: how many parameters one of it holds under a config,
which config keys it reads besides its own, and what it exports as. Registering a class that
cannot answer them is refused at import, so a new entry is one class, one registration and its
README row."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from gptcli.config import ModelConfig

T = TypeVar("T")


class Part(Protocol):
    """What every registered model part answers, whatever its registry."""

    # ModelConfig keys it reads beyond the one that names it (rope: rope_base).
    config_keys: ClassVar[tuple[str, ...]]
    # Its name in a transformers config.json (gelu_tanh: "gelu_new"; swiglu: its gate's "silu");
    # None where transformers says it by the architecture alone, or cannot say it.
    exports_as: ClassVar[str | None]

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        """The parameters one instance holds in a model of cfg."""
        ...


PART = ("config_keys", "exports_as", "num_params")


class Registry(Generic[T]):
    """kind names the registry in messages; interface lists what each entry must define
    (PART for a model part's registry)."""

    def __init__(self, kind: str, interface: tuple[str, ...] = ()):
        self.kind = kind
        self.interface = interface
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            if missing := [a for a in self.interface if not hasattr(item, a)]:
                raise TypeError(f"{self.kind} '{name}' does not define {', '.join(missing)}")
            self._items[name] = item
            return item

        return add

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self._items)}")
        return self._items[name]
