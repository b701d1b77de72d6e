"""A self-contained HTML page: styles inline, pictures as data: URLs, no script and no reference
to any other file or address, so it opens the same from an e-mail attachment as from disk."""

from __future__ import annotations

import base64
from html import escape

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em;
       color: #1d2327; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccd; }
table { border-collapse: collapse; margin: 0.8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccd; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f0f2f6; } td.text, th.text { text-align: left; white-space: normal; }
tr.best td { font-weight: 600; background: #eef8ee; }
.better { color: #18794e; } .worse { color: #b42318; } .noise { color: #6b6f76; }
img { max-width: 100%; border: 1px solid #e3e5ea; margin: 0.4em 0; }
.muted { color: #6b6f76; font-size: 0.92em; }
.pair { display: grid; grid-template-columns: 3fr 2fr; gap: 1em; align-items: start; }
.wide { overflow-x: auto; }
"""
VERDICT_CLASS = {"better": "better", "worse": "worse", "within noise": "noise"}


def page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{escape(text)}</h{level}>"


def paragraph(text: str, muted: bool = False) -> str:
    attr = ' class="muted"' if muted else ""
    return f"<p{attr}>{escape(text)}</p>"


def bullets(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def table(head: list[str], rows: list[list[str]], text_columns: int = 1,
          best_first: bool = False) -> str:  # fmt: skip
    """Columns past the first text_columns hold numbers (right-aligned); verdicts are coloured."""

    def cell(tag: str, i: int, value: str) -> str:
        classes = ["text"] if i < text_columns else []
        if value in VERDICT_CLASS:
            classes.append(VERDICT_CLASS[value])
        cls = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{cls}>{escape(value)}</{tag}>"

    lines = ['<div class="wide"><table>']
    if any(head):  # a table of facts has no column titles
        lines.append("<tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr>")
    for n, row in enumerate(rows):
        attr = ' class="best"' if best_first and n == 0 else ""
        lines.append(f"<tr{attr}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    lines.append("</table></div>")
    return "\n".join(lines)


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def pair(*parts: str) -> str:
    return '<div class="pair">' + "".join(f"<div>{p}</div>" for p in parts) + "</div>"
