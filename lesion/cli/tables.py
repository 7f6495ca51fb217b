"""The console, on which every string is data; tables that keep neuron names whole; ``--json`` output.

Every string the CLI prints is shown as it is (:class:`DataConsole`): a path, a model or corpus
name, a text name, a model's continuation or a note read from a result is never read as rich
markup (``x[/]y.txt`` once raised MarkupError and lost the result; ``[red]a.txt`` showed as ``a.txt``)
nor as an emoji code, and its control characters are shown escaped (``\\x1b``), never sent to the
terminal. Style comes only from ``style=`` or :func:`styled`.

A neuron name is long (``model.layers.11.mlp.down_proj:507``) and rich shortens a cell that
does not fit to ``model.layers.…``, losing exactly the part that tells neurons apart: the
layer, the module and the channel. Here the dotted prefix every name in the table shares
(``model.layers.``) is left off and said once in the column header, and no cell is ever cut short:
a cell that still does not fit wraps (``overflow="fold"``).
"""
from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..runtime.display import printable


class DataConsole(Console):
    """A rich console that shows every string it is given as it is: no markup, no emoji codes, no
    highlighting, and control characters escaped (tab and newline kept: a cell may hold lines).
    Tables' cells, headers and titles reach it through :meth:`render_str` too."""

    def __init__(self, **options):
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def render_str(self, text: str, **options) -> Text:
        options.update(markup=False, emoji=False)
        return super().render_str(printable(text, newlines=True), **options)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line of text with a styled part or two: each part a string, or (string, rich style),
    e.g. ``styled(("note", "yellow"), ": ...")``; every string is shown as data."""
    text = Text()
    for part in parts:
        words, style = part if isinstance(part, tuple) else (part, "")
        text.append(printable(words, newlines=True), style=style)
    return text


def shown(value: object) -> str:
    """A name or a path in a line of output: its control characters, newline and tab included,
    shown escaped (a name is one line)."""
    return printable(value)


def shared_prefix(names: Iterable[str]) -> str:
    """The dotted path every name starts with, up to (not into) the first layer number:
    ``model.layers.`` for Llama-style names, ``transformer.h.`` for GPT-2; '' if none is shared."""
    split = [name.split(".") for name in names]
    if not split:
        return ""
    shared = []
    for parts in zip(*(s[:-1] for s in split)):  # the last part holds the channel: always kept
        if len(set(parts)) > 1 or parts[0].isdigit():
            break
        shared.append(parts[0])
    return ".".join(shared) + "." if shared else ""


def neuron_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, neuron_columns: Sequence[int] = (0,),
                 title: str | None = None) -> Table:
    """A table whose ``neuron_columns`` hold neuron names (possibly followed by a remark, e.g.
    ``... *``): their shared prefix is left off, and no cell is truncated."""
    names = [row[c] for row in rows for c in neuron_columns if "." in row[c]]  # not "all 2", "the set", ""
    prefix = shared_prefix(name.split(" ")[0] for name in names)
    table = Table(title=title)
    for i, column in enumerate(columns):
        # In the header, not a caption: a caption is as narrow as the table and would wrap.
        table.add_column(f"{column} ({prefix}*)" if prefix and i in neuron_columns else column, overflow="fold")
    for row in rows:
        table.add_row(*(cell[len(prefix):] if i in neuron_columns and prefix and cell.startswith(prefix) else cell
                        for i, cell in enumerate(row)))
    return table


def add_json_flag(parser, result_path: Callable) -> None:
    """``--json``: the tables go to stderr and the result file the command wrote (``result_path(args)``)
    goes to stdout, the same object, for a program to parse. Call after ``set_defaults(run=...)``."""
    parser.add_argument("--json", action="store_true",
                        help="print the result file's JSON on stdout (the tables go to stderr)")
    run = parser.get_default("run")

    @wraps(run)
    def run_with_json(args) -> int:
        if not args.json:
            return run(args)
        with contextlib.redirect_stdout(sys.stderr):  # the console writes to whatever sys.stdout is
            code = run(args)
        path = Path(result_path(args))
        if code == 0 and path.is_file():
            sys.stdout.write(json.dumps(json.loads(path.read_text(encoding="utf-8")), indent=1) + "\n")
        return code

    parser.set_defaults(run=run_with_json)
