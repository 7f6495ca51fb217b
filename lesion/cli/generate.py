"""`lesion generate`: the original and the masked continuation of a prompt, side by side."""
from __future__ import annotations

import argparse

from rich.table import Table

from ..options import ABLATIONS
from .common import add_common_flags, add_model_args, console, critical_neurons, load, read_critical
from . import flag

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
    from ..generation import generate, generate_masked, repeated_share
    from ..neurons import discover_sites
    from ..recorded import recorded_ablation

    from ..generation import check_generation
    for prompt in args.prompt:
        check_generation(prompt, args.max_new_tokens)
    critical = read_critical(args.neurons)
    lm = load(args, recorded=critical.settings)
    neurons = critical_neurons(critical, lm)
    index = discover_sites(lm.model, "all")
    recorded = recorded_ablation(critical.settings)
    ablation = args.ablation or recorded
    if ablation != recorded:
        console.print(f"[yellow]note[/yellow]: {flag('ablation')} {ablation} overrides the {recorded} ablation "
                      f"{args.neurons} was found with")
    table = Table("prompt", "original", f"{len(neurons)} neuron(s) masked ({ablation})", show_lines=True)
    for column in table.columns:
        column.overflow = "fold"
    for prompt in args.prompt:
        original = generate(lm.model, lm.tokenizer, prompt, args.max_new_tokens)
        masked = generate_masked(lm.model, lm.tokenizer, index, neurons, prompt, args.max_new_tokens, ablation)
        table.add_row(prompt, f"{original!r}\n({repeated_share(lm.tokenizer, original):.0%} repeated tokens)",
                      f"{masked!r}\n({repeated_share(lm.tokenizer, masked):.0%} repeated tokens)")
    console.print(table)
    return 0
