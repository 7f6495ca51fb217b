"""`lesion mechanism`: massive activations, super weights, positions, ablation designs, normalisation."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from ..filenames import MECHANISM
from ..errors import LesionError
from .common import exit_code, stopped_why
from .common import add_common_flags, add_model_args, console, fmt, load, progress_enabled
from .tables import add_json_flag, neuron_table

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
    from ..analysis.robustness import TEXTS
    from ..mechanism import mechanism
    from ..runfolder import CRITICAL, MECHANISM, RunFolder
    from .common import check_out, check_seed

    check_seed(args.seed)
    if args.max_neurons < 0:
        raise LesionError(f"--max-neurons must be >= 0 (0: all), got {args.max_neurons}")
    folder = RunFolder(args.run_dir)
    critical = folder.critical()
    if not critical.neurons:
        raise LesionError(f"{folder.file(CRITICAL)} has no critical set (threshold not reached): re-run "
                          "`lesion scan` with a lower --epsilon or a larger --max-neurons")
    check_out(folder.file(MECHANISM), "run_dir")
    lm = load(args, recorded=critical.settings)
    study = folder.study(lm)
    report = mechanism(study, critical.neurons, other_text=TEXTS["wikipedia"], seed=args.seed,
                       max_neurons=args.max_neurons or None, time_budget=args.time_budget,
                       progress=progress_enabled(args))
    report = dataclasses.replace(report, settings=study.settings(seed=args.seed, max_neurons=args.max_neurons,
                                                                 time_budget=args.time_budget))
    result = report.to_dict()
    path = folder.write(MECHANISM, result)
    print_neurons(result)
    print_overlap(result)
    print_lesions(result)
    print_coverage(report)
    console.print(f"wrote {path}")
    return exit_code(report.stopped, path)


def print_coverage(report: MechanismReport) -> None:
    if report.finished:
        return
    why = "complete" if report.stopped == "complete" else stopped_why(report.stopped)
    console.print(f"{why} after {report.seconds:.0f} s: {report.neurons_tested} of {report.critical_size} "
                  "critical neurons tested one by one" + ("" if report.stopped != "complete" else
                                                          " (raise --max-neurons, 0 for all)"), soft_wrap=True)


def print_neurons(result: dict) -> None:
    rows = [[n["neuron"], fmt(n["max_abs"]), str(n["argmax_position"]), fmt(n["ratio_to_median"]),
             str(n["rank_by_max_abs"]), str(n["massive"]), str(n["super_weight_row"]), fmt(n["alone"]["zero"]),
             fmt(n["alone"]["position0"])] for n in result["neurons"]]
    console.print(neuron_table(["neuron", "max |a|", "at position", "x module median", "rank by |a|", "massive",
                                "super-weight row", "Delta alone", "Delta at position 0"], rows,
                               title="critical neurons"))
    for n in result["neurons"]:
        console.print(f"{n['neuron']}:", soft_wrap=True)
        for label in n["labels"]:
            console.print(f"  {label}", soft_wrap=True)
        for direction in ("feeding", "leaving"):
            for s in n[direction]:
                top = ", ".join(f"[{i}] {fmt(v)}" for i, v in s["top"])
                console.print(f"  {direction} {s['slice']}: largest |w| at {top}", soft_wrap=True)


def print_overlap(result: dict) -> None:
    """Top massive activations and data-free super-weight candidates, each beside its causal
    test; * marks critical neurons."""
    critical = {n["neuron"] for n in result["neurons"]}
    rows = []
    for i, (m, w) in enumerate(zip(result["massive_activations"], result["super_weights"]), 1):
        row = f"{w['module']}:{w['row']}"
        rows.append([str(i), m["neuron"] + (" *" if m["neuron"] in critical else ""), fmt(m["max_abs"]),
                     str(m["argmax_position"]), _tested(m, "delta_position0"),
                     f"{row} (col {w['column']})" + (" *" if row in critical else ""), fmt(w["ratio_to_median"]),
                     _tested(w, "delta_zeroed")])
    console.print(neuron_table(["#", "massive activation", "max |a|", "at position", "Delta, zeroed at position 0",
                                "super-weight candidate", "|w| / median", "Delta, that weight zeroed"], rows,
                               neuron_columns=(1, 5),
                               title="critical set (*) among the model's outliers, by magnitude, "
                                     "and their causal tests"))
    console.print(f"causal: {result['criteria']['causal']}", soft_wrap=True)


def _tested(row: dict, key: str) -> str:
    """The causal test's Delta and verdict; a run stopped before the test says so."""
    if key not in row:
        return "not tested (stopped)"
    return f"{fmt(row[key])} ({'causal' if row['causal'] else 'not causal'})"


def print_lesions(result: dict) -> None:
    lesions = Table("lesion of the critical set", "Delta", "non-finite token losses", "first non-finite output",
                    "largest finite |output|")
    for group in ("positions", "ablations"):
        for label, value in result[group].items():
            lesions.add_row(f"{group[:-1]}: {label}", fmt(value), "", "", "")
    for label, r in result["normalisation_tokens"].items():
        # A Delta of inf says only that some token loss is not finite: show how many, and the
        # Delta over the finite ones.
        finite = r["delta_finite_tokens"]
        value = fmt(r["delta"]) if not r["nonfinite_tokens"] else \
            f"{fmt(r['delta'])} (finite tokens: {'none' if finite is None else fmt(finite)})"
        lesions.add_row(f"norm statistics {label}", value, f"{r['nonfinite_tokens']} of {r['tokens']}",
                        r["first_nonfinite_module"] or "", fmt(r["largest_finite_abs_output"]))
    console.print(lesions)
    for label, r in result["normalisation_tokens"].items():
        if r["nonfinite_tokens"]:
            growth = ", ".join(f"{layer}: {fmt(v)}" for layer, v in enumerate(r["largest_finite_abs_output_by_layer"]))
            console.print(f"norm statistics {label}: largest finite |output| by layer: {growth}", soft_wrap=True)
    console.print(f"following norm(s): {', '.join(result['following_norms']) or 'none'}", soft_wrap=True)
