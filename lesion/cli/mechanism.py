"""`lesion mechanism`: massive activations, super weights, positions, ablation designs, normalisation."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from ..errors import LesionError
from .common import add_common_flags, add_model_args, console, fmt, load
from .tables import add_json_flag, neuron_table

EXAMPLES = """examples:
  lesion mechanism --run lesion-run
"""


def register(sub) -> None:
    p = sub.add_parser("mechanism", help="why the critical neurons matter: activations, weights, positions",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--run", dest="run_dir", default="lesion-run", help="scan folder with critical.json")
    p.add_argument("--seed", type=int, default=0, help="for the resampled ablation")
    add_common_flags(p)
    p.set_defaults(run=run)
    add_json_flag(p, lambda args: Path(args.run_dir) / "mechanism.json")


def run(args) -> int:
    from ..analysis.robustness import TEXTS
    from ..mechanism import mechanism
    from ..runfolder import CRITICAL, MECHANISM, RunFolder
    from .common import check_out, check_seed

    check_seed(args.seed)
    folder = RunFolder(args.run_dir)
    critical = folder.critical()
    if not critical.neurons:
        raise LesionError(f"{folder.file(CRITICAL)} has no critical set (threshold not reached): re-run "
                          "`lesion scan` with a lower --epsilon or a larger --max-neurons")
    check_out(folder.file(MECHANISM))
    lm = load(args, recorded=critical.settings)
    study = folder.study(lm)
    result = mechanism(study, critical.neurons, other_text=TEXTS["wikipedia"], seed=args.seed)
    path = folder.write(MECHANISM, {**result, "settings": study.settings(seed=args.seed)})
    print_neurons(result)
    print_overlap(result)
    print_lesions(result)
    console.print(f"wrote {path}")
    return 0


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
                     str(m["argmax_position"]), f"{fmt(m['delta_position0'])} ({_verdict(m)})",
                     f"{row} (col {w['column']})" + (" *" if row in critical else ""), fmt(w["ratio_to_median"]),
                     f"{fmt(w['delta_zeroed'])} ({_verdict(w)})"])
    console.print(neuron_table(["#", "massive activation", "max |a|", "at position", "Delta, zeroed at position 0",
                                "super-weight candidate", "|w| / median", "Delta, that weight zeroed"], rows,
                               neuron_columns=(1, 5),
                               title="critical set (*) among the model's outliers, by magnitude, and their causal tests"))
    console.print(f"causal: {result['criteria']['causal']}", soft_wrap=True)


def _verdict(row: dict) -> str:
    return "causal" if row["causal"] else "not causal"


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
