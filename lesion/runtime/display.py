"""User strings shown as data. A path, a model or corpus name, a text name or a model's own
output may hold bytes a terminal or a page acts on: ESC starts a terminal escape sequence (colour,
cursor moves, a retitled window), a carriage return or backspace overwrites what was printed,
the bidirectional overrides reorder what is read (U+202E), a lone surrogate (a file name that was
not UTF-8) cannot be encoded at all. :func:`printable` shows each of them as its escape, as Python's
``repr`` writes it (``\\x1b``, ``\\u202e``), and leaves every other character as it is.

The console (``lesion.cli.tables.DataConsole``), report.md and report.html and the notebook views
show user strings through it; each adds its own escaping on top (rich markup, markdown, HTML).
"""
from __future__ import annotations

import re

# C0 controls but tab and newline, DEL and the C1 controls; the invisible format characters that
# reorder or hide text (Arabic letter mark, zero-width space, left/right marks, line and paragraph
# separators, the bidirectional embeddings, overrides and isolates, word joiners, the BOM); lone
# surrogates. Zero-width (non-)joiners are left alone: scripts and emoji sequences need them.
_LAYOUT = "\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff"
_ESCAPED = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_LAYOUT}]")
_ESCAPED_ALL = re.compile(f"[\x00-\x1f\x7f-\x9f{_LAYOUT}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    ch = match.group(0)
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: object, newlines: bool = False) -> str:
    """``text`` (made a string) with every control, layout-changing or unencodable character shown
    as its escape. ``newlines``: keep tab and newline as they are (a table cell of several lines, a
    model's continuation); by default they are escaped too, as a name is one line."""
    return (_ESCAPED if newlines else _ESCAPED_ALL).sub(_escape, str(text))
