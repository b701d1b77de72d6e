"""The gptcli command line: each command parses its options, calls one library function and
presents the result; no model, training or scoring logic lives here."""

# Importing a command module registers its command; `--help` lists them in this order, the
# pipeline's. noqa: the order is deliberate, not alphabetical.
from gptcli.cli.app import app  # noqa: I001
from gptcli.cli import prepare, train, sample, evaluate, study, inspect, convert, export  # noqa: F401

__all__ = ["app", "main"]

# Commands that, once they return, leave nothing behind but what they printed and files they
# wrote and closed (no threads, trackers or children): for them the interpreter's teardown,
# freeing torch's thousand modules one by one, is 0.3-0.45 s of nothing (benchmarks/
# bench_decode.py), 6-9% of a 1000-token sample.
EXIT_AT_ONCE = {"sample", "eval"}


def main() -> None:
    import os
    import sys

    try:
        app()
    except SystemExit as done:
        code = done.code
        if sys.argv[1:2] and sys.argv[1] in EXIT_AT_ONCE and isinstance(code, int | None):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)
        raise
