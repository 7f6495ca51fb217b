"""The exceptions lesion raises for a problem the user can fix; the CLI turns each into one line
on stderr and exit code 2. One tree, so that ``except LesionError`` catches them all::

    LesionError
    ├── ParameterError       a bad value for one parameter of a library call (``parameter`` names it)
    │   └── ConfigError      a model's config.json a plan cannot use (``source``, ``field``)
    ├── ResultError          a result file that cannot be used: not a lesion result, damaged or edited
    │   ├── InconsistentRun  the files of a run folder do not belong together
    │   └── JournalMismatch  a search journal's Delta the model does not reproduce
    ├── ModelError           a model lesion cannot load or study: no blocks or neuron sites it can find,
    │                        a forward that fails, non-finite outputs, a hub repository it refuses
    ├── MissingPackage       an optional package or program a feature needs is not installed
    ├── ModelMismatch        a result made on other weights, dtype or tokenizer than the model given
    └── BudgetExhausted      a row or time budget is spent (a search catches it and returns its best set)

A message names a parameter in backticks (``"widen `signals`"``): a notebook shows it so, and the
CLI, which knows its flags, shows the flag in its place (:meth:`LesionError.naming`).
"""
from __future__ import annotations

import re
from typing import Callable

# A parameter named inside a message, in backticks: "cannot be given with `text`".
_NAMED = re.compile(r"`([a-z][a-z0-9_]*)`")


def name_parameters(text: str, name: Callable[[str], str | None]) -> str:
    """``text`` with each backticked parameter shown as ``name(parameter)``; one ``name`` does not
    know (None) keeps its backticks. The CLI uses it for notes read from results too."""
    return _NAMED.sub(lambda m: name(m.group(1)) or m.group(0), text)


class LesionError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""

    def naming(self, name: Callable[[str], str | None]) -> str:
        """The message with each backticked parameter called ``name(parameter)`` (the CLI passes its flag)."""
        return name_parameters(str(self), name)


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

    def naming(self, name: Callable[[str], str | None]) -> str:
        return f"{name(self.parameter) or self.parameter} {name_parameters(self.problem, name)}"


class ConfigError(ParameterError):
    """A model's config that a plan cannot use: ``parameter`` is how it was given (``model`` or
    ``config``), ``source`` the file, ``field`` the field at fault (None: the file as a whole)."""

    def __init__(self, parameter: str, source: str, field: str | None, problem: str):
        self.source = source
        self.field = field
        super().__init__(parameter, f"{source}: {field + ' ' if field else ''}{problem}")


class ResultError(LesionError):
    """A result file lesion cannot use as it is: not a lesion result of the kind asked for, damaged,
    edited so that it contradicts itself, or missing what it needs (its text, its neurons)."""


class SchemaError(ResultError):
    """A result file written under a schema this lesion does not know (a newer lesion's)."""


class InconsistentRun(ResultError):
    """The files of a run folder do not belong together: another model's or text's result, or a
    result edited so that it no longer agrees with the ones it was made from."""


class JournalMismatch(ResultError):
    """A set read from a search journal does not have, on the model, the Delta the journal gives."""


class ModelError(LesionError):
    """A model lesion cannot load or study as given: the message says what is missing (a folder, its
    config or safetensors, blocks or neuron sites lesion can find, a forward on input ids alone)."""


class MissingPackage(LesionError):
    """An optional package (or program, such as Chromium) that the feature asked for needs: the
    message names what to install."""


class ModelMismatch(LesionError):
    """A result (or fingerprints, or a journal) made on other weights, another dtype or another
    tokenizer than the model it is used with."""


class BudgetExhausted(LesionError):
    """The row budget (``max_rows``) or the time budget (``time_budget``) ran out; a search catches
    it and returns its best set so far."""
