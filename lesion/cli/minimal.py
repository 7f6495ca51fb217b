"""`lesion minimal`: prune the greedy set to an irreducible one and search the optimum exhaustively."""
from __future__ import annotations

import argparse

from rich.table import Table

from ..runtime.anytime import Stopped
from .common import add_common_flags, add_model_args, console, exit_code, fmt, load, progress_enabled, stopped_why
from .tables import shown

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
    p.add_argument("--max-rows", type=int, default=None,
                   help="stop after this many sets evaluated (pruning included) and write what finished")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds and write what finished")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..heel.minimal import check_search_bounds, minimal_at, minimal_epsilon
    from ..replay.runfolder import RunFolder, minimal_name
    from ..masking.metrics import check_epsilon
    from .common import check_out

    if args.epsilon is not None:
        check_epsilon(args.epsilon)
    check_search_bounds(args.pool, args.max_size)
    folder = RunFolder(args.run_dir)
    ranking, critical = folder.ranking(), folder.critical()
    epsilon = minimal_epsilon(args.epsilon, critical)
    check_out(folder.file(minimal_name(epsilon)), "run_dir", named=False)
    lm = load(args, recorded=ranking.settings)
    result = minimal_at(folder.study(lm), ranking, epsilon, critical=critical, pool=args.pool,
                        max_size=args.max_size, progress=progress_enabled(args), time_budget=args.time_budget,
                        max_rows=args.max_rows)
    path = folder.write(minimal_name(epsilon), result)
    table = Table("set", "size", "Delta", "forward rows", title=f"epsilon = {epsilon:g}")
    optimum = f"optimum (top {result.pool}, sizes <= {result.max_size})"
    sets = {"greedy": (result.greedy, result.greedy_delta, "-"),
            "irreducible": (result.irreducible, result.irreducible_delta, str(result.prune_rows)),
            optimum: (result.optimum, result.optimum_delta, str(result.search_rows))}
    for label, (neurons, value, rows) in sets.items():
        table.add_row(label, "-" if neurons is None else str(len(neurons)),
                      "-" if value is None else fmt(value), rows)
    console.print(table)
    for label, (neurons, _, _) in sets.items():
        console.print(f"{label}: " + ("no subset reaches epsilon" if neurons is None else " ".join(neurons)),
                      soft_wrap=True)
    console.print(f"exhaustive search: {result.search_rows} sets in {result.search_forwards} batched forwards"
                  + ("" if result.greedy_is_optimal is None else
                     f"; greedy set {'is' if result.greedy_is_optimal else 'is NOT'} optimal within the pool"))
    if result.stopped != Stopped.COMPLETE:
        console.print(f"{stopped_why(result.stopped, 'its budget')} after {result.seconds:.0f} s: every subset up "
                      f"to size {result.searched_size} was "
                      "searched; the optimum above that is not certified")
    console.print(f"wrote {shown(path)}")
    return exit_code(result.stopped, path)
