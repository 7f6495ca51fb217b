"""`lesion sites`: list the neuron sites (modules, kinds, widths) discovered in a model."""
from __future__ import annotations

from collections import Counter

from rich.table import Table

from .common import add_common_flags, add_components_arg, add_model_args, console, load


def register(sub) -> None:
    p = sub.add_parser("sites", help="list the neuron sites of a model")
    add_model_args(p)
    add_components_arg(p)
    p.add_argument("--all", action="store_true", help="list every module, not a summary per kind")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..model.neurons import discover_sites
    index = discover_sites(load(args).model, args.components)
    if args.all:
        table = Table()
        for col in ("module", "layer", "kind", "channels"):
            table.add_column(col)
        for s in index.sites:
            table.add_row(s.name, str(s.layer), s.kind, f"{s.width} {s.channel_shape}")
    else:
        widths, counts = Counter(), Counter()
        for s in index.sites:
            widths[s.kind] += s.width
            counts[s.kind] += 1
        table = Table(title=f"{index.total} neurons in {len(index.sites)} modules")
        for col in ("kind", "modules", "neurons"):
            table.add_column(col)
        for kind in sorted(widths):
            table.add_row(kind, str(counts[kind]), str(widths[kind]))
    console.print(table)
    return 0
