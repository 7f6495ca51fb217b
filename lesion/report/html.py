"""The HTML pieces a report and a notebook cell share: number formatting, a table, an embedded
PNG. No result type is imported here, so the result types' ``_repr_html_`` can use them."""
from __future__ import annotations

import base64
import html
import io
import math

from .figures import plt  # figures picks the headless backend before pyplot loads


def fmt(x) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def html_table(header: list[str], rows: list[list]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def png_bytes(fig) -> bytes:
    """The figure as PNG; the figure is closed (pyplot would otherwise keep every one alive)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def html_image(name: str, png: bytes) -> str:
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
