"""The pieces a report and a notebook cell share: number formatting, user strings escaped for
HTML and for markdown, a table, an embedded PNG. No result type is imported here, so the result
types' ``_repr_html_`` can use them; matplotlib loads only to draw a PNG.

Every string on a page (a model, corpus or text name, a note read from a result, a table cell)
goes through :func:`html_text` or :func:`md_text`: its control characters shown escaped
(:func:`lesion.runtime.display.printable`), then what HTML or markdown would act on escaped. A
model folder named ``<img src=x onerror=...>`` is text in both files, and ``a|b`` stays one cell.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re

from ..runtime.display import printable


def fmt(x) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def html_text(value, newlines: bool = False) -> str:
    """``value`` as HTML text: control characters shown escaped (``newlines``: newline and tab
    kept, for a ``<pre>``), then ``& < > " '`` as entities."""
    return html.escape(printable(value, newlines=newlines))


# What markdown (CommonMark and GitHub's tables, strikethrough and math) could read as syntax in a
# line of text: each is escaped with a backslash, which every renderer shows as the character. An
# underscore inside a word (down_proj) is never emphasis, and is left as it is.
_MD_SYNTAX = re.compile(r"[\\`*\[\]|<>&~$]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_text(value) -> str:
    """``value`` as one line of markdown text (a heading, a paragraph, a table cell): control
    characters, newlines included, shown escaped; then every character markdown would act on
    (a ``|`` ending a cell, ``<`` opening a tag, ``[`` a link, backticks, emphasis, ``$`` math)
    escaped with a backslash."""
    return _MD_SYNTAX.sub(lambda m: "\\" + m.group(0), printable(value))


def html_table(header: list[str], rows: list[list]) -> str:
    cells = "".join(f"<th>{html_text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def md_table(header: list[str], rows: list[list]) -> str:
    return ("| " + " | ".join(md_text(h) for h in header) + " |\n|" + " --- |" * len(header) + "\n" +
            "".join("| " + " | ".join(md_text(c) for c in row) + " |\n" for row in rows))


def png_bytes(fig) -> bytes:
    """The figure as PNG; the figure is closed (pyplot would otherwise keep every one alive). Drawn
    with its text plain (:data:`lesion.report.figures.PLAIN_TEXT`): tick labels made at draw time
    are plain too."""
    from .figures import PLAIN_TEXT, plt  # figures picks the headless backend before pyplot loads
    buf = io.BytesIO()
    with plt.rc_context(PLAIN_TEXT):
        fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def html_image(name: str, png: bytes) -> str:
    return f'<img alt="{html_text(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
