"""Command-line entry point: a thin layer over the library.

Each subcommand lives in its own module of this package with ``register(subparsers)``
(modules without it, like ``common``, are helpers); the parser it adds sets
``run=fn(args) -> exit code``. Bad input is a :class:`LesionError`: one line on
stderr and exit code 2, never a traceback. Argument errors argparse finds are the same
one line. Command modules import torch only inside their ``run``, so that ``--help`` is
instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LesionError


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as lesion's one line (not usage text and a second line)."""

    def error(self, message: str):
        raise LesionError(f"{message} (see `{self.prog} --help`)")


def command_modules() -> list:
    import pkgutil
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    return [m for m in modules if hasattr(m, "register")]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lesion", description="Find the neurons an LLM cannot live without.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in command_modules():
        module.register(sub)
    return parser


def _version() -> str:
    from .. import __version__
    return f"lesion {__version__}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args) or 0)
    except LesionError as e:
        print(f"lesion: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lesion: interrupted: no partial result was written", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
