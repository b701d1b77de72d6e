"""The gptcli command line: each command parses its options, calls one library function and
presents the result; no model, training or scoring logic lives here."""

# Importing a command module registers its command; `--help` lists them in this order, the
# pipeline's. noqa: the order is deliberate, not alphabetical.
from gptcli.cli.app import app  # noqa: I001
from gptcli.cli import prepare, train, sample, evaluate, study, inspect, convert, export  # noqa: F401

__all__ = ["app", "main"]


def __getattr__(name: str):
    """`command`: the Click command Typer builds from app, for tools that read a Click CLI (the
    documentation's generated reference, mkdocs-click); built on demand, not at import."""
    if name == "command":
        import typer.main

        return typer.main.get_command(app)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _prose(doc: str | None) -> str | None:
    """A docstring as --help shows it: paragraphs that wrap at any width. Typer's rich help
    keeps a docstring's single line breaks, which at another width break sentences mid-line."""
    from inspect import cleandoc

    if doc is None:
        return None
    return "\n\n".join(" ".join(p.split()) for p in cleandoc(doc).split("\n\n"))


for _command in app.registered_commands:
    _command.help = _command.help or _prose(_command.callback.__doc__)

# Commands that, once they return, leave nothing behind but what they printed and files they
# wrote and closed (no threads, trackers or children): for them the interpreter's teardown,
# freeing torch's thousand modules one by one, is 0.3-0.45 s of nothing (benchmarks/
# bench_decode.py), 6-9% of a 1000-token sample.
EXIT_AT_ONCE = {"sample", "eval"}

# The commands that run a model, and the library module each imports first (torch with it),
# which main imports frozen: importing torch leaves ~170k objects that live as long as the
# process, and a full garbage collection walks them all, 85 ms each on the project machine,
# three of them in a 1000-token sample (0.18 s).
LIBRARY = {"train": "gptcli.training.loop", "sample": "gptcli.generate", "eval": "gptcli.evaluate"}


def import_frozen(module: str) -> None:
    """Import module with the garbage collector off, then freeze what the import made: later
    collections walk only the objects the command itself makes."""
    import gc
    import importlib

    collecting = gc.isenabled()
    gc.disable()
    try:
        importlib.import_module(module)
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def main() -> None:
    import os
    import sys

    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command == "train":
        # Process-wide, so the command line's to set, not the library's; not for sample: a
        # 1000-token sample was 1.09x slower with it (five alternated pairs, same text).
        from gptcli.allocator import keep_freed_memory

        keep_freed_memory()
        from gptcli.cores import spin_less

        spin_less()  # before torch loads libgomp, which reads it once
    if command in LIBRARY:
        import_frozen(LIBRARY[command])
    try:
        app()
    except SystemExit as done:
        code = done.code
        if command in EXIT_AT_ONCE and isinstance(code, int | None):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)
        raise
