"""The exceptions lesion raises for a problem the user can fix; the CLI turns each into one line
on stderr and exit code 2."""
from __future__ import annotations

import re
from typing import Callable

# Another parameter named inside a message, in backticks: "cannot be given with `text`".
_NAMED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class LesionError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""


class ParameterError(LesionError):
    """A bad value for one parameter of a library call.

    ``parameter`` is its name in Python (``max_rows``); the message reads "max_rows must be >= 1
    (got 0)" in a notebook, and the CLI, which knows its flags, shows the same sentence with the
    flag in its place ("--max-rows must be >= 1 (got 0)"). ``problem`` is the rest of the
    sentence: what the value must be, the value given, and where it helps, how to pick one; it
    names another parameter in backticks (``"cannot be given with `text`"``), so that the CLI
    shows that one as its flag too.
    """

    def __init__(self, parameter: str, problem: str):
        self.parameter = parameter
        self.problem = problem
        super().__init__(f"{parameter} {problem}")

    def naming(self, name: Callable[[str], str]) -> str:
        """The message with each parameter called ``name(parameter)`` (the CLI passes its flag)."""
        return f"{name(self.parameter)} {_NAMED.sub(lambda m: name(m.group(1)), self.problem)}"
