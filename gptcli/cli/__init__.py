"""The gptcli command line: each command parses its options, calls one library function and
presents the result; no model, training or scoring logic lives here."""

# Importing a command module registers its command; `--help` lists them in this order, the
# pipeline's. noqa: the order is deliberate, not alphabetical.
from gptcli.cli.app import app  # noqa: I001
from gptcli.cli import prepare, train, sample, evaluate, study, inspect, convert, export  # noqa: F401

__all__ = ["app", "main"]


def main() -> None:
    app()
