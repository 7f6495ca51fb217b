"""Where a result's notebook view is found: a registry the view layer fills.

The result types sit below the views that draw them (:mod:`lesion.report.notebook`, which uses the
report's figures), so a result does not import its view: ``Result._repr_html_`` looks its
type up here, and :mod:`lesion.report.notebook` registers the views when it is imported (the
``lesion`` package imports it in a notebook, where IPython is loaded). A type without a view
shows as JSON. This module imports nothing of lesion's.
"""
from __future__ import annotations

from typing import Any, Callable

HTML_VIEWS: dict[str, Callable[[Any], str]] = {}  # result type name -> its HTML for a notebook cell


def register_html_view(type_name: str, view: Callable[[Any], str]) -> None:
    HTML_VIEWS[type_name] = view


def html_view(result: Any) -> Callable[[Any], str] | None:
    """The view registered for ``result``'s type or the nearest base class that has one."""
    for cls in type(result).__mro__:
        if cls.__name__ in HTML_VIEWS:
            return HTML_VIEWS[cls.__name__]
    return None
