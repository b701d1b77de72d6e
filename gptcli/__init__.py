"""gptcli: prepare a corpus, train a GPT-2-style model with switchable parts, sample from it."""

__version__ = "0.1.0"
