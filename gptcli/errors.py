"""The one exception type the CLI turns into a single line and exit code 2."""


class GptcliError(Exception):
    """A problem with the user's input (config, data, checkpoint, prompt), not a bug.

    The message must say what is wrong and how to fix it; the CLI prints it without a traceback.
    """


def first_line(exc: BaseException) -> str:
    """A library exception reduced to one line for a GptcliError message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
