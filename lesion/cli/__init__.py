"""Command-line entry point: a thin layer over the library.

Each subcommand lives in its own module of this package with ``register(subparsers)``
(modules without it, like ``common``, are helpers); the parser it adds sets
``run=fn(args) -> exit code``. Bad input is a :class:`LesionError`: one line on
stderr and exit code 2, never a traceback; a :class:`ParameterError` names the library's
parameter, which this layer shows as its flag (:func:`flag`). Argument errors argparse
finds are the same one line. Command modules import torch only inside their ``run``, so that ``--help`` is
instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LesionError

# The one table from library parameters to flags: those whose flag is not the parameter's name with
# dashes (``max_rows`` -> ``--max-rows``). Every message the CLI shows names flags through :func:`flag`.
FLAGS = {"per_signal": "--pool", "run_dir": "--run", "corpora": "--corpus", "prompts": "--prompt",
         "result": "--neurons", "neurons": "NEURON"}  # lesion mask's positional arguments


def flag(parameter: str) -> str:
    """The command-line flag that sets a library parameter."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def error_line(error: LesionError) -> str:
    """What the CLI prints for a user error: the message, with each parameter shown as its flag."""
    return error.naming(flag)


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
    parser.add_argument("--version", action=_PrintVersion)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in command_modules():
        module.register(sub)
    return parser


def _version() -> str:
    """The version and, when run from a git checkout, its commit (an installed wheel has none)."""
    import subprocess

    from ..version import __version__, checkout
    root = checkout()
    if root is None:
        return f"lesion {__version__}"
    try:
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git, or not a repository after all
        return f"lesion {__version__}"
    return f"lesion {__version__} (git {commit})"


class _PrintVersion(argparse.Action):
    """``--version``, computed only when asked: finding the commit runs git."""
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version (and git commit) and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if hasattr(args, "unit"):  # before any model loads: the library's checks of both
            from ..model.architectures import resolve_components, unit_components
            args.components = unit_components(getattr(args, "components", None), args.unit)
            resolve_components(args.components)
        from ..runtime.anytime import remembered_interrupts, sigterm_as_interrupt
        from ..runtime.distributed import run_command  # torch-free unless launched by torchrun
        from ..runtime.files import output_locks
        # SIGTERM (a scheduler's stop) is Ctrl-C everywhere; every output the command checks before its
        # work is its own until it returns (another run writing one is refused there, in one line).
        with remembered_interrupts(), sigterm_as_interrupt(), output_locks():
            return int(run_command(args.run, args, error_line) or 0)
    except LesionError as e:
        from ..runtime.display import printable
        from ..runtime.distributed import speaks
        if speaks():  # under torchrun every rank refuses the same input: rank 0 says it
            print(f"lesion: error: {printable(error_line(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lesion: interrupted: no partial result was written", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
