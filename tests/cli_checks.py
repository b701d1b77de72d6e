"""What the command-line tests share: running gptcli in process, and checking that a refusal is
one line and that it left the disk as it was."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gptcli.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every file and directory under path (path itself included), with each file's bytes."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(path.rglob("*"))}  # fmt: skip
