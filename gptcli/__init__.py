"""gptcli: prepare a corpus, train a GPT-2-style model with switchable parts, sample from it."""

from gptcli.version import __version__

__all__ = ["__version__", "load"]


def load(path, which: str = "best", device="auto", precision: str = "fp32"):
    """A trained checkpoint, ready to sample: `gptcli.load("out/demo").generate("ROMEO:")`.

    Defined here lazily so that `import gptcli` stays light (torch loads on first use).
    """
    from gptcli.generate import load as _load

    return _load(path, which, device, precision)
