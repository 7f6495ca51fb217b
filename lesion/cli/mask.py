"""`lesion mask`: the quickest causal check, the perplexity of a text with given neurons masked."""
from __future__ import annotations

import argparse

from rich.table import Table

from ..errors import LesionError
from .common import add_common_flags, add_model_args, add_text_args, console, fmt, load

EXAMPLES = """examples:
  lesion mask model.layers.11.mlp.down_proj:507
  lesion mask model.layers.11.mlp.down_proj:507 model.layers.28.mlp.down_proj:507 --text "..."
  lesion mask --neurons lesion-run/critical.json
"""


def register(sub) -> None:
    p = sub.add_parser("mask", help="perplexity of a text with neurons masked, jointly and one by one",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_text_args(p)
    p.add_argument("neuron", nargs="*", help="neurons as module:channel")
    p.add_argument("--neurons", default=None, help="critical.json whose neurons to mask")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..ablation import baseline_nll, masked_nll
    from ..metrics import delta, perplexity
    from ..neurons import Neuron, discover_sites
    from ..texts import check_context, encode, read_text
    from .common import read_critical

    neurons = [Neuron.parse(s) for s in args.neuron]
    recorded = None
    if args.neurons:
        critical = read_critical(args.neurons)
        neurons += list(critical.neurons)
        recorded = critical.settings
    if not neurons:
        raise LesionError("no neurons to mask: name them (module:channel) or pass --neurons critical.json")
    text = read_text(args.text, args.text_file)
    lm = load(args, recorded=recorded)
    if recorded is not None:
        from ..study import check_same_model
        check_same_model(recorded, lm, "critical set")
    ids = encode(lm.tokenizer, text, lm.device)
    check_context(lm.model, ids)
    index = discover_sites(lm.model, "all")
    index.check(neurons)
    clean = baseline_nll(lm.model, ids, args.dtype)
    sets = [neurons] + ([[n] for n in neurons] if len(neurons) > 1 else [])
    nlls = masked_nll(lm.model, ids, index, sets)
    table = Table(title=f"{ids.shape[1]} tokens, unmasked perplexity {fmt(perplexity(clean))}")
    for col in ("masked", "perplexity", "Delta (log10 ratio)"):
        table.add_column(col)
    labels = [f"all {len(neurons)}" if len(neurons) > 1 else str(neurons[0])] + [str(s[0]) for s in sets[1:]]
    for label, nll in zip(labels, nlls):
        table.add_row(label, fmt(perplexity(nll)), fmt(delta(nll, clean)))
    console.print(table)
    return 0
