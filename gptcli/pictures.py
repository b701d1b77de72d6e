"""Figures as PNG files: matplotlib's Agg backend (no display needed), written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from gptcli import atomic


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported only when a picture is asked for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str | Path) -> Path:
    """Write fig as a PNG at out (a reader never sees half a file) and close it."""
    plt = pyplot()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    atomic.write_bytes(out, buffer.getvalue())
    return out
