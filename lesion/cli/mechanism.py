"""`lesion mechanism`: massive activations, super weights, positions, ablation designs, normalisation."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from . import flag
from ..results.filenames import MECHANISM
from .common import exit_code, stopped_why
from .common import add_common_flags, add_model_args, console, fmt, load, progress_enabled
from .tables import add_json_flag, neuron_table, shown

if TYPE_CHECKING:  # lesion.results imports torch, which `lesion --help` must not wait for
    from ..results.mechanism import MechanismReport

EXAMPLES = """examples:
  lesion mechanism --run lesion-run
  lesion mechanism --run lesion-run --max-neurons 4 --time-budget 300
"""
MAX_NEURONS = 12  # each neuron tested costs about four masked rows


def register(sub) -> None:
    p = sub.add_parser("mechanism", help="why the critical neurons matter: activations, weights, positions",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--run", dest="run_dir", default="lesion-run", help="scan folder with critical.json")
    p.add_argument("--seed", type=int, default=0, help="for the resampled ablation")
    p.add_argument("--max-neurons", type=int, default=MAX_NEURONS,
                   help=f"test the first N critical neurons one by one (default {MAX_NEURONS}; 0: all); "
                        "the lesions of the whole set always mask every neuron")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds and write what finished (default: no limit)")
    add_common_flags(p)
    p.set_defaults(run=run)
    add_json_flag(p, lambda args: Path(args.run_dir) / MECHANISM)


def run(args) -> int:
    from ..texts.named import TEXTS
    from ..mechanism.run import mechanism
    from ..replay.runfolder import CRITICAL, MECHANISM, RunFolder, check_has_neurons
    from ..runtime.options import check_seed
    from .common import check_out

    check_seed(args.seed)
    folder = RunFolder(args.run_dir)
    critical = folder.critical()
    check_has_neurons(critical, folder.file(CRITICAL))
    check_out(folder.file(MECHANISM), "run_dir", named=False)
    lm = load(args, recorded=critical.settings)
    study = folder.study(lm)
    report = mechanism(study, critical.neurons, other_text=TEXTS["wikipedia"], seed=args.seed,
                       max_neurons=args.max_neurons, time_budget=args.time_budget,
                       progress=progress_enabled(args))
    report = dataclasses.replace(report, settings=study.settings(seed=args.seed, max_neurons=args.max_neurons,
                                                                 time_budget=args.time_budget))
    path = folder.write(MECHANISM, report.to_dict())
    print_neurons(report)
    print_overlap(report)
    print_lesions(report)
    print_coverage(report)
    console.print(f"wrote {shown(path)}")
    return exit_code(report.stopped, path)


def print_coverage(report: MechanismReport) -> None:
    from ..runtime.anytime import Stopped
    if report.finished:
        return
    complete = report.stopped == Stopped.COMPLETE
    why = "complete" if complete else stopped_why(report.stopped)
    console.print(f"{why} after {report.seconds:.0f} s: {report.neurons_tested} of {report.critical_size} "
                  "critical neurons tested one by one" + (f" (raise {flag('max_neurons')}, 0 for all)" if complete
                                                          else ""), soft_wrap=True)


def print_neurons(report: MechanismReport) -> None:
    rows = [[n.neuron, fmt(n.max_abs), str(n.argmax_position), fmt(n.ratio_to_median), str(n.rank_by_max_abs),
             str(n.massive), str(n.super_weight_row), fmt(n.alone.zero), fmt(n.alone.position0)]
            for n in report.neurons]
    console.print(neuron_table(["neuron", "max |a|", "at position", "x module median", "rank by |a|", "massive",
                                "super-weight row", "Delta alone", "Delta at position 0"], rows,
                               title="critical neurons"))
    for n in report.neurons:
        console.print(f"{n.neuron}:", soft_wrap=True)
        for label in n.labels:
            console.print(f"  {label}", soft_wrap=True)
        for direction, slices in (("feeding", n.feeding), ("leaving", n.leaving)):
            for s in slices:
                top = ", ".join(f"[{i}] {fmt(v)}" for i, v in s.top)
                console.print(f"  {direction} {s.slice}: largest |w| at {top}", soft_wrap=True)


def print_overlap(report: MechanismReport) -> None:
    """Top massive activations and data-free super-weight candidates, each beside its causal
    test; * marks critical neurons."""
    critical = {n.neuron for n in report.neurons}
    rows = []
    for i, (m, w) in enumerate(zip(report.massive_activations, report.super_weights), 1):
        row = f"{w.module}:{w.row}"
        rows.append([str(i), m.neuron + (" *" if m.neuron in critical else ""), fmt(m.max_abs),
                     str(m.argmax_position), _tested(m.delta_position0, m.causal),
                     f"{row} (col {w.column})" + (" *" if row in critical else ""), fmt(w.ratio_to_median),
                     _tested(w.delta_zeroed, w.causal)])
    console.print(neuron_table(["#", "massive activation", "max |a|", "at position", "Delta, zeroed at position 0",
                                "super-weight candidate", "|w| / median", "Delta, that weight zeroed"], rows,
                               neuron_columns=(1, 5),
                               title="critical set (*) among the model's outliers, by magnitude, "
                                     "and their causal tests"))
    console.print(f"causal: {report.criteria.causal}", soft_wrap=True)


def _tested(delta: float | None, causal: bool | None) -> str:
    """The causal test's Delta and verdict; a run stopped before the test says so."""
    if delta is None:
        return "not tested (stopped)"
    return f"{fmt(delta)} ({'causal' if causal else 'not causal'})"


def print_lesions(report: MechanismReport) -> None:
    lesions = Table("lesion of the critical set", "Delta", "non-finite token losses", "first non-finite output",
                    "largest finite |output|")
    for group, deltas in (("positions", report.positions), ("ablations", report.ablations)):
        for label, value in deltas.items():
            lesions.add_row(f"{group[:-1]}: {label}", fmt(value), "", "", "")
    for label, r in report.normalisation_tokens.items():
        # A Delta of inf says only that some token loss is not finite: show how many, and the
        # Delta over the finite ones.
        finite = r.delta_finite_tokens
        value = fmt(r.delta) if not r.nonfinite_tokens else \
            f"{fmt(r.delta)} (finite tokens: {'none' if finite is None else fmt(finite)})"
        lesions.add_row(f"norm statistics {label}", value, f"{r.nonfinite_tokens} of {r.tokens}",
                        r.first_nonfinite_module or "", fmt(r.largest_finite_abs_output))
    console.print(lesions)
    for label, r in report.normalisation_tokens.items():
        if r.nonfinite_tokens:
            growth = ", ".join(f"{layer}: {fmt(v)}" for layer, v in enumerate(r.largest_finite_abs_output_by_layer))
            console.print(f"norm statistics {label}: largest finite |output| by layer: {growth}", soft_wrap=True)
    console.print(f"following norm(s): {', '.join(report.following_norms) or 'none'}", soft_wrap=True)
