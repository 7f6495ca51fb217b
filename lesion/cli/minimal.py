"""`lesion minimal`: prune the greedy set to an irreducible one and search the optimum exhaustively."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from ..results import write_json
from .common import add_common_flags, add_model_args, console, fmt, load, progress_enabled

EXAMPLES = """examples:
  lesion minimal --run lesion-run                    # greedy vs irreducible vs optimum over the top 20
  lesion minimal --run lesion-run --epsilon 5 --pool 20
"""


def register(sub) -> None:
    p = sub.add_parser("minimal", help="irreducible and optimal critical sets (vs the greedy one)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--run", dest="run_dir", default="lesion-run", help="scan folder with ranking.json")
    p.add_argument("--epsilon", type=float, default=None, help="default: the scan's epsilon")
    p.add_argument("--pool", type=int, default=20, help="exhaustive search over subsets of the top-m")
    p.add_argument("--max-size", type=int, default=None, help="largest subset size searched")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..minimal import minimal_sets
    from ..pipeline import Study
    from .analyze import _scan_outputs

    run_dir = Path(args.run_dir)
    ranking, critical = _scan_outputs(run_dir)
    epsilon = args.epsilon if args.epsilon is not None else critical.settings.get("epsilon", 1.0)
    lm = load(args)
    study = Study.create(lm, ranking.settings["text"], ranking.settings.get("components"))
    study.check_ranking(ranking)
    greedy = critical.neurons
    if args.epsilon is not None and args.epsilon != critical.settings.get("epsilon"):
        greedy = study.identify(ranking, epsilon=epsilon, progress=progress_enabled(args)).neurons
    result = minimal_sets(study, ranking.neurons, greedy, epsilon=epsilon, pool=args.pool,
                          max_size=args.max_size, progress=progress_enabled(args))
    path = write_json(run_dir / f"minimal-eps{epsilon:g}.json", result)
    table = Table("set", "size", "Delta", "forward rows", "neurons", title=f"epsilon = {epsilon:g}")
    table.add_row("greedy", str(len(result.greedy)), fmt(result.greedy_delta), "-", ", ".join(result.greedy))
    table.add_row("irreducible", str(len(result.irreducible)), fmt(result.irreducible_delta),
                  str(result.prune_rows), ", ".join(result.irreducible))
    table.add_row(f"optimum (top {result.pool}, sizes <= {result.max_size})",
                  "-" if result.optimum is None else str(len(result.optimum)),
                  "-" if result.optimum_delta is None else fmt(result.optimum_delta), str(result.search_rows),
                  "none reaches epsilon" if result.optimum is None else ", ".join(result.optimum))
    console.print(table)
    console.print(f"wrote {path}")
    return 0
