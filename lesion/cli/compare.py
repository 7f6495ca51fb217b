"""`lesion compare`: the noise ranking against the baselines at several levels."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from ..errors import ParameterError
from ..results.filenames import COMPARE
from ..runtime.anytime import Stopped
from .common import exit_code, stopped_why
from .common import (add_common_flags, add_components_arg, add_model_args, add_noise_args, add_text_args,
                     console, fmt, load, progress_enabled)
from .tables import add_json_flag, shown

EXAMPLES = """examples:
  lesion compare                                           # noise,random,activation,gradient at 1,10,100,1000
  lesion compare --rankers noise,random --levels 1,2,3,5,10,30,100,300,1000 --random-runs 5
"""


def register(sub) -> None:
    p = sub.add_parser("compare", help="mask the top-n of several rankings, Delta per level",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_text_args(p)
    add_components_arg(p)
    p.add_argument("--rankers", default="noise,random,activation,gradient")
    p.add_argument("--levels", default="1,10,100,1000")
    p.add_argument("--random-runs", type=int, default=10, help="seeds averaged for the random ranker")
    add_noise_args(p)
    p.add_argument("--out-dir", default="lesion-run", help="folder for compare.json (the report reads it)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds (between rankings) and write the rankers that finished")
    add_common_flags(p)
    p.set_defaults(run=run)
    add_json_flag(p, lambda args: Path(args.out_dir) / COMPARE)


def parse_ints(text: str, parameter: str) -> list[int]:
    """Comma-separated whole numbers for the library (which checks their range)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ParameterError(parameter, f"takes comma-separated whole numbers, e.g. 1,10,100 (got {text!r})") from None


def run(args) -> int:
    from ..method.compare import compare_rankers
    from ..method.study import Study
    from ..method.scorers import check_ranker
    from ..replay.runfolder import COMPARE, RunFolder
    from ..texts.text import read_text
    from .common import check_noise_args, check_out

    levels = parse_ints(args.levels, "levels")
    rankers = [check_ranker(r.strip(), "rankers") for r in args.rankers.split(",") if r.strip()]
    check_noise_args(args)
    folder = RunFolder(args.out_dir)
    check_out(folder.file(COMPARE), "out_dir", named=False)
    study = Study.create(load(args), read_text(args.text, args.text_file), args.components)
    result = compare_rankers(study, rankers, levels, random_runs=args.random_runs, seed=args.seed,
                             progress=progress_enabled(args), time_budget=args.time_budget, alpha=args.alpha,
                             samples=args.samples)
    path = folder.write(COMPARE, result)
    table = Table("ranker", *(f"n={n}" for n in result.levels), "falls back at",
                  title=f"Delta (log10 PPL ratio) when masking the top-n; baseline PPL {fmt(result.baseline_ppl)}")
    for ranker in result.rankers:
        cells = []
        for n in result.levels:
            row = next(r for r in result.rows if r.ranker == ranker and r.n == n)
            cells.append(fmt(row.delta) + (f" ±{fmt(row.delta_std)}" if row.runs > 1 else ""))
        table.add_row(ranker, *cells, ",".join(map(str, result.fallbacks[ranker])) or "-")
    console.print(table)
    if result.stopped != Stopped.COMPLETE:
        console.print(f"{stopped_why(result.stopped)} after {result.seconds:.0f} s: "
                      f"{', '.join(result.rankers) or 'no ranker'} finished "
                      f"of {', '.join(rankers)}")
    console.print(f"wrote {shown(path)}")
    return exit_code(result.stopped, path)
