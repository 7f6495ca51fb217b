"""Reports: result JSON of a run folder -> figures -> one self-contained HTML page + markdown
(:mod:`.render`, :mod:`.figures`, :mod:`.html`), its check in a browser (:mod:`.browser`), and the
notebook views of every result (:mod:`.notebook`, :mod:`.notebook_views`).

The names load on first use: a notebook's views do not import the renderer."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .browser import RenderCheck, check_render
    from .render import build_report

_EXPORTS = {"RenderCheck": "browser", "check_render": "browser", "build_report": "render"}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["build_report", "check_render", "RenderCheck"]
