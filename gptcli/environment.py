"""Where a run was trained: versions and machine, kept beside its checkpoints (environment.json,
one entry per start, since a resumed run may continue elsewhere) so a study can say what its
numbers were measured on."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from gptcli import atomic, cpu
from gptcli.cores import my_cpus
from gptcli.version import __version__

FILE = "environment.json"


def describe(device: torch.device, world_size: int = 1, precision: str | None = None) -> dict:
    return {
        "gptcli": __version__,
        "commit": source_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu.model_name(),
        "cpu_level": cpu.level(),
        "cores": len(my_cpus()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "processes": world_size,
        "precision": precision,
    }


def record(run_dir: Path, step: int, entry: dict[str, Any]) -> None:
    """Add this start (at step) to run_dir's environment.json; a fresh run starts a new file."""
    path = Path(run_dir) / FILE
    entries = read(run_dir) if step > 0 else []
    atomic.write_json(path, [*entries, {"step": step, **entry}])


def read(run_dir: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads((Path(run_dir) / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def source_commit() -> str | None:
    """The git commit of gptcli's own source when it runs from a checkout (an editable install),
    with "+changes" when the tree differs from it; None for an installed package."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "gptcli"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "")
