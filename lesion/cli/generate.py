"""`lesion generate`: the original and the masked continuation of a prompt, side by side."""
from __future__ import annotations

import argparse

from rich.table import Table

from ..runtime.options import ABLATIONS
from .common import add_common_flags, add_model_args, console, load, named, read_critical
from .tables import styled

EXAMPLES = """examples:
  lesion generate --neurons lesion-run/critical.json --prompt "The capital of France is"
"""


def register(sub) -> None:
    p = sub.add_parser("generate", help="original vs masked continuation of a prompt",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--neurons", required=True, help="critical.json from lesion scan/identify")
    p.add_argument("--prompt", action="append", required=True, help="repeatable")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--ablation", default=None, choices=list(ABLATIONS),
                   help="how the neurons are masked; default: the ablation the result recorded (zero for a scan)")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..replay.generation import compare_continuations

    from ..replay.generation import check_generation
    for prompt in args.prompt:
        check_generation(prompt, args.max_new_tokens)
    critical = read_critical(args.neurons)  # before the model loads: the model it was found on
    lm = load(args, recorded=critical.settings)
    found = compare_continuations(lm, args.neurons, args.prompt, max_new_tokens=args.max_new_tokens,
                                  ablation=args.ablation)
    for note in found.notes:
        console.print(styled(("note", "yellow"), f": {named(note)}"))
    table = Table("prompt", "original", f"{found.size} neuron(s) masked ({found.ablation})", show_lines=True)
    for column in table.columns:
        column.overflow = "fold"
    for row in found.rows:
        table.add_row(row.prompt, f"{row.original!r}\n({row.original_repeated:.0%} repeated tokens)",
                      f"{row.masked!r}\n({row.masked_repeated:.0%} repeated tokens)")
    console.print(table)
    return 0
