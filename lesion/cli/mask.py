"""`lesion mask`: the quickest causal check, the perplexity of a text with given neurons masked."""
from __future__ import annotations

import argparse

from ..runtime.options import ABLATIONS
from .common import add_common_flags, add_model_args, add_text_args, console, fmt, load, named
from .tables import shown, styled

EXAMPLES = """examples:
  lesion mask model.layers.11.mlp.down_proj:507
  lesion mask model.layers.11.mlp.down_proj:507 model.layers.28.mlp.down_proj:507 --text "..."
  lesion mask --neurons lesion-run/critical.json     # on the text(s) and ablation it recorded
  lesion mask --neurons heel.json --ablation zero      # an override: said so, and no longer a reproduction
"""


def register(sub) -> None:
    p = sub.add_parser("mask", help="perplexity of a text with neurons masked, jointly and one by one",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_text_args(p)
    p.add_argument("neuron", nargs="*", help="neurons as module:channel (experts as <experts module>.E with "
                                             "--unit expert)")
    p.add_argument("--unit", default="neuron", choices=["neuron", "expert"],
                   help="expert: the names are whole experts, e.g. model.layers.11.mlp.experts.2")
    p.add_argument("--neurons", default=None,
                   help="critical.json or heel.json whose neurons to mask, on the text(s) and with the ablation "
                        "it recorded (a row per text, against the recorded Delta)")
    p.add_argument("--ablation", default=None, choices=list(ABLATIONS),
                   help="zero (default), mean, position0; default with --neurons: the one it recorded")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..model.experts import expert_label, unit_name
    from ..model.neurons import Neuron
    from ..replay.recorded import check_mask_neurons, masked_perplexity
    from ..texts.text import read_text
    from .common import read_critical

    neurons = check_mask_neurons([Neuron.parse(unit_name(s) if args.unit == "expert" else s) for s in args.neuron],
                                 args.neurons)
    given = read_text(args.text, args.text_file) if args.text is not None or args.text_file is not None else None
    recorded = read_critical(args.neurons).settings if args.neurons else None  # before the model loads
    lm = load(args, recorded=recorded)
    masking = masked_perplexity(lm, neurons, result=args.neurons, text=given, ablation=args.ablation)
    for note in masking.notes:
        console.print(styled(("note", "yellow"), f": {named(note)}"))
    print_rows(masking.rows, masking.size, masking.ablation, expert_label if args.unit == "expert" else str)
    return 0


def print_rows(rows, size: int, ablation: str, label=str) -> None:
    """A row per text (its name, tokens and unmasked PPL), the whole set first, then each neuron alone
    (``label``: how a neuron is shown; an expert unit by its expert's name)."""
    from .tables import neuron_table
    recorded = any(r.recorded_delta is not None for r in rows)
    columns = ["text", "masked", "PPL", "Delta", *(("recorded", "same") if recorded else ())]
    cells = []
    for r in rows:
        same = {True: "yes", False: "NO", None: "-"}[r.reproduced]
        cells.append([f"{shown(r.name)} ({r.tokens} tok, PPL {fmt(r.baseline_ppl)})", f"all {size}" if r.alone else
                      "the set", fmt(r.masked_ppl), fmt(r.delta),
                      *((fmt(r.recorded_delta) if r.recorded_delta is not None else "-", same) if recorded else ())])
        cells += [["", label(neuron), fmt(ppl), fmt(d), *(("", "") if recorded else ())] for neuron, ppl, d in r.alone]
    console.print(neuron_table(columns, cells, neuron_columns=(1,),
                               title=f"{size} neuron(s) masked, {ablation} ablation; Delta = log10 PPL ratio"))
