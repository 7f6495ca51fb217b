"""`lesion scan` (both stages), `lesion rank` (stage 1) and `lesion identify` (stage 2)."""
from __future__ import annotations

import argparse
from pathlib import Path
import time

from typing import TYPE_CHECKING

from rich.table import Table

from ..results.filenames import CRITICAL
from .common import (add_common_flags, add_components_arg, add_model_args, add_stage1_args,
                     add_stage2_args, add_text_args, check_out, check_stage1, check_stage2, console, fmt, load, named,
                     progress_enabled)
from .tables import add_json_flag, neuron_table, shown, styled

if TYPE_CHECKING:
    from ..results import CriticalSet, Ranking

SCAN_EXAMPLES = """examples:
  lesion scan                                   # default model, Bookends sentence
  lesion scan --model gemma3-270m --alpha-relative --out runs/gemma
  lesion scan --components down --dtype bfloat16
"""


def register(sub) -> None:
    p = sub.add_parser("scan", help="run both stages: rank neurons, then find the critical set",
                       epilog=SCAN_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    for add in (add_model_args, add_text_args, add_components_arg, add_stage1_args, add_stage2_args,
                add_common_flags):
        add(p)
    p.add_argument("--out", default="lesion-run", help="output folder for ranking.json and critical.json")
    p.add_argument("--report", action="store_true", help="also write OUT/report.html and OUT/report.md")
    p.set_defaults(run=run_scan)
    add_json_flag(p, lambda args: Path(args.out) / CRITICAL)

    p = sub.add_parser("rank", help="stage 1 only: rank neurons and write ranking.json")
    for add in (add_model_args, add_text_args, add_components_arg, add_stage1_args, add_common_flags):
        add(p)
    p.add_argument("--out", default="ranking.json", help="ranking JSON to write")
    p.set_defaults(run=run_rank)
    add_json_flag(p, lambda args: args.out)

    p = sub.add_parser("identify", help="stage 2 only: greedy masking over a ranking")
    for add in (add_model_args, add_text_args, add_stage2_args, add_common_flags):
        add(p)
    p.add_argument("--ranking", required=True, help="ranking.json from `lesion rank`")
    p.add_argument("--out", default="critical.json", help="critical-set JSON to write")
    p.set_defaults(run=run_identify)
    add_json_flag(p, lambda args: args.out)


def _text(args) -> str | None:
    """The text given by --text/--text-file, or None (read before the model loads)."""
    from ..texts.text import read_text
    return read_text(args.text, args.text_file) if args.text is not None or args.text_file is not None else None


def _study(args, components=None):
    from ..method.study import Study
    from ..texts.text import BOOKENDS
    text = _text(args)
    lm = load(args)
    return Study.create(lm, BOOKENDS if text is None else text, components)


def _rank_options(args) -> dict:
    return dict(alpha=args.alpha, samples=args.samples, max_samples=args.max_samples, seed=args.seed,
                alpha_relative=args.alpha_relative, reduce=args.reduce, batch_size=args.batch_size,
                keep=args.keep, use_cache=not args.no_cache)


def _rank(study, args) -> Ranking:
    return study.rank(args.ranker, progress=progress_enabled(args), **_rank_options(args))


def _stage2_options(args) -> dict:
    return dict(epsilon=args.epsilon, step=args.step, max_neurons=args.max_neurons, stage2=args.stage2)


def _identify(study, ranking, args) -> CriticalSet:
    return study.identify(ranking, progress=progress_enabled(args), **_stage2_options(args))


def run_scan(args) -> int:
    from ..results.scan import CRITICAL, FINGERPRINTS, RANKING, RUN
    check_stage1(args)
    check_stage2(args)
    from ..runtime.files import check_output_folder
    check_output_folder(args.out, "out")  # before the model loads: a path that cannot be written costs nothing
    out = Path(args.out)
    from ..results.filenames import REPORT_HTML, REPORT_MD
    for name in (RANKING, CRITICAL, FINGERPRINTS, RUN, *((REPORT_HTML, REPORT_MD) if args.report else ())):
        check_out(out / name, named=False)
    start = time.perf_counter()
    study = _study(args, args.components)
    study.timings["load_s"] = time.perf_counter() - start
    scan = study.scan(args.ranker, progress=progress_enabled(args), **_stage2_options(args), **_rank_options(args))
    from ..runtime.distributed import agree
    if not agree():  # under torchrun: every rank succeeded, and only rank 0 writes
        return 0
    scan.save(out)
    print_critical(scan.critical, scan.timings)
    console.print(f"wrote {shown(out / RANKING)}, {shown(out / CRITICAL)}")
    if args.report:
        from ..report import build_report
        console.print(f"wrote {shown(build_report(out)[0])}")
    return 0


def run_rank(args) -> int:
    from ..results import save_result as write_result
    check_stage1(args)
    check_out(args.out)
    study = _study(args, args.components)
    ranking = _rank(study, args)
    write_result(args.out, ranking)
    rows = [[str(i + 1), str(neuron), fmt(ranking.scores[i]),
             "" if ranking.positions is None else str(ranking.positions[i])]
            for i, neuron in enumerate(ranking.neurons[:10])]
    console.print(neuron_table(["rank", "neuron", "score", "position"], rows, neuron_columns=(1,),
                               title=f"top neurons of {ranking.total_neurons} ({ranking.ranker} ranker)"))
    console.print(f"stage 1: {sum(study.timings.values()):.1f} s; wrote {shown(args.out)}")
    return 0


def run_identify(args) -> int:
    from ..method.study import Study
    from ..results import Ranking
    from ..results import save_result as write_result
    check_stage2(args)
    check_out(args.out)
    ranking = Ranking.load(args.ranking)
    from ..results import recorded_text
    text = recorded_text(ranking.settings, _text(args), args.ranking)  # a wrong text is refused before loading
    lm = load(args, recorded=ranking.settings)
    study = Study.recreate(lm, ranking.settings, args.ranking, text)
    critical = _identify(study, ranking, args)
    write_result(args.out, critical)
    print_critical(critical, study.timings)
    console.print(f"wrote {shown(args.out)}")
    return 0


def print_critical(critical: CriticalSet, timings: dict) -> None:
    epsilon = critical.settings.epsilon_or_default
    if critical.reached:
        console.print(styled(("critical set", "bold"), f": {len(critical.neurons)} neuron(s) reach Delta >= {epsilon}"))
        shown = 15
        rows = [[str(i), str(n)] for i, n in enumerate(critical.neurons[:shown], 1)]
        if len(critical.neurons) > shown:
            rows.append(["...", f"{len(critical.neurons) - shown} more in critical.json"])
        console.print(neuron_table(["#", "neuron"], rows, neuron_columns=(1,)))
    else:
        console.print(styled(("threshold not reached", "bold"),
                             f": no n <= {critical.trajectory[-1].n} masked neurons reaches Delta >= {epsilon}; the "
                             "best n gives the figures below. The trajectory is written."))
    summary = Table("baseline PPL", "masked PPL", "Delta (log10)", "forward rows",
                    *(f"{k[:-2].replace('_', ' ')} s" for k in timings))
    summary.add_row(fmt(critical.baseline_ppl), fmt(critical.masked_ppl), fmt(critical.delta),
                    str(critical.forward_rows), *(f"{v:.1f}" for v in timings.values()))
    console.print(summary)
    from ..results import unsettled_note
    note = unsettled_note(critical.settings)
    if note:
        console.print(styled(("note", "yellow"), f": {named(note)}"))
