"""`lesion analyze NAME`: the paper's analyses, each writing OUT_DIR/analysis-NAME.json.

Each analysis is registered once, in ``ANALYSES``: its name, one line of help, the check of
its own options (run before the model loads), how it computes its result and settings,
and the few lines it prints. argparse's choices and the did-you-mean come from there.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Callable

from ..errors import LesionError
from .common import (add_common_flags, add_model_args, add_noise_args, add_stage2_search_arg, add_text_args,
                     check_noise_args, console, finite, load, progress_enabled)
from .compare import parse_ints

EXAMPLES = """examples:
  lesion scan --out lesion-run                 # distribution and phase read its ranking and critical set
  lesion analyze distribution --out-dir lesion-run
  lesion analyze phase --out-dir lesion-run --max-n 30
  lesion analyze components --levels 1,10,100,1000
  lesion analyze sweep --alphas 1,3,5,7,10 --sample-grid 25,50,75,100,125
  lesion analyze robustness --samples 50
  lesion analyze precision --dtypes float32,bfloat16,float16
"""


@dataclass(frozen=True)
class Inputs:
    """What every analysis may use: the run folder, the text given (or None), Stage 1 options."""
    folder: object  # lesion.runfolder.RunFolder
    text: str | None
    rank_options: dict


@dataclass(frozen=True)
class AnalysisSpec:
    name: str
    summary: str
    check: Callable[[argparse.Namespace], object]  # its own options, before the model loads
    compute: Callable[[argparse.Namespace, Inputs], tuple[dict, dict]]  # -> (result, settings)
    lines: Callable[[dict], dict | list]  # a few lines for the console; the JSON has everything


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise LesionError("--alphas takes comma-separated numbers, e.g. 1,3,5,7,10") from None
    if not alphas or not all(0 < a < float("inf") for a in alphas):
        raise LesionError("--alphas needs numbers > 0, e.g. 1,3,5,7,10")
    return alphas


def _robustness_texts(args) -> dict[str, str]:
    """lesion's ten texts (plus --text), or --passages N drawn from --corpus."""
    from ..analysis import TEXTS
    from ..texts import read_text
    if args.passages < 0:
        raise LesionError(f"--passages must be >= 0 (got {args.passages})")
    if args.passages:
        from ..evaluation.corpora import load_corpus, sample_passages
        corpus = load_corpus(args.corpus)
        drawn = sample_passages(corpus.documents, args.passages, seed=args.seed)
        return {f"{corpus.name}#{i}": text for i, text in enumerate(drawn)}
    given = {} if args.text is None and args.text_file is None else {"given": read_text(args.text, args.text_file)}
    return {**TEXTS, **given}


def parse_dtypes(text: str) -> list[str]:
    from .common import DTYPES
    dtypes = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        raise LesionError(f"--dtypes takes a comma-separated list of {', '.join(DTYPES)} (got {text!r})")
    return dtypes


def _on_run(args, inputs: Inputs):
    """(study, ranking, critical) of the run folder, on its model unless --model overrides it."""
    ranking, critical = inputs.folder.ranking(), inputs.folder.critical()
    return inputs.folder.study(load(args, recorded=ranking.settings), inputs.text), ranking, critical


def _on_text(args, inputs: Inputs):
    from ..study import Study
    from ..texts import BOOKENDS
    return Study.create(load(args), inputs.text or BOOKENDS)


def _distribution(args, inputs: Inputs) -> tuple[dict, dict]:
    from ..analysis import distribution
    study, ranking, critical = _on_run(args, inputs)
    return distribution(study.index, ranking.neurons, critical.neurons, parse_ints(args.top_k, "--top-k")), \
        study.settings()


def _phase(args, inputs: Inputs) -> tuple[dict, dict]:
    from ..analysis import phase_transition
    study, ranking, critical = _on_run(args, inputs)
    result = phase_transition(study, ranking.neurons, critical.neurons, args.max_n,
                              epsilon=critical.settings.get("epsilon", 1.0))
    return result, study.settings()


def _components(args, inputs: Inputs) -> tuple[dict, dict]:
    from ..analysis import component_ablation
    study = _on_text(args, inputs)
    kinds = args.kinds.split(",") if args.kinds else None
    result = component_ablation(study, kinds, parse_ints(args.levels, "--levels"), **inputs.rank_options)
    return result, study.settings(**inputs.rank_options)


def _sweep(args, inputs: Inputs) -> tuple[dict, dict]:
    from ..analysis import sensitivity_sweep
    study = _on_text(args, inputs)
    options = {k: v for k, v in inputs.rank_options.items() if k not in ("alpha", "samples", "seed")}
    result = sensitivity_sweep(study, *_sweep_grids(args), ref_alpha=args.alpha, ref_samples=args.samples,
                               seed=args.seed, epsilon=args.epsilon, stage2=args.stage2, **options)
    return result, study.settings(**options, stage2=args.stage2)


def _sweep_grids(args) -> tuple[list[float], list[int], list[int]]:
    try:
        seeds = [int(x) for x in args.seed_grid.split(",") if x.strip()]
    except ValueError:
        raise LesionError("--seed-grid takes comma-separated whole numbers, e.g. 43,44 ('' for none)") from None
    if any(not 0 <= s < 2 ** 63 for s in seeds):
        raise LesionError("--seed-grid takes seeds in 0..2^63-1, e.g. 43,44")
    # '' leaves a grid out: --alphas '' --sample-grid '' --seed-grid 43,44 is a seed check alone.
    alphas = parse_alphas(args.alphas) if args.alphas.strip() else []
    samples = parse_ints(args.sample_grid, "--sample-grid") if args.sample_grid.strip() else []
    if not (alphas or samples or seeds):
        raise LesionError("the sweep has no points: give --alphas, --sample-grid or --seed-grid")
    return alphas, samples, seeds


def _robustness(args, inputs: Inputs) -> tuple[dict, dict]:
    from ..analysis import robustness
    from ..study import model_provenance
    from ..texts import text_hash
    texts = _robustness_texts(args)
    lm = load(args)
    result = robustness(lm, texts, epsilon=args.epsilon, stage2=args.stage2, **inputs.rank_options)
    return result, {**model_provenance(lm), "epsilon": args.epsilon, "stage2": args.stage2, **inputs.rank_options,
                    "text_sha256": {name: text_hash(t) for name, t in texts.items()}}


def _precision(args, inputs: Inputs) -> tuple[dict, dict]:
    from ..analysis import precision
    from ..texts import BOOKENDS, text_hash
    from .common import check_device, resolve_model_args
    resolve_model_args(args)
    check_device(args)
    text = inputs.text or BOOKENDS
    result = precision(args.model, text, parse_dtypes(args.dtypes), epsilon=args.epsilon, device=args.device,
                       stage2=args.stage2,
                       **inputs.rank_options)
    return result, {"model": args.model, "text_sha256": text_hash(text), "text": text, "epsilon": args.epsilon,
                    "stage2": args.stage2, **inputs.rank_options}


def _robustness_lines(result: dict) -> dict:
    per_text = {k: {"tokens": v["tokens"], "n_star": v["n_star"], "neurons": v["neurons"][:5]}
                for k, v in result["texts"].items()}
    return {**per_text, f"most common (of {len(per_text)} texts)": result["most_common"][:3]}


ANALYSES: dict[str, AnalysisSpec] = {spec.name: spec for spec in (
    AnalysisSpec("distribution", "where the critical and top-k neurons sit, by layer and kind",
                 lambda args: parse_ints(args.top_k, "--top-k"), _distribution,
                 lambda r: {"critical_by_kind": r["critical"]["by_kind"],
                            "top100_by_kind": r.get("top100", {}).get("by_kind")}),
    AnalysisSpec("phase", "Delta as n grows past n*, and each critical neuron alone vs jointly",
                 lambda args: None, _phase,
                 lambda r: {"n_star": r["n_star"], "joint_delta": r["joint_delta"], "alone": r["alone"],
                            "curve": [(p["n"], round(p["delta"], 3)) for p in r["curve"]]}),
    AnalysisSpec("components", "Delta of the top-n neurons of each component kind",
                 lambda args: parse_ints(args.levels, "--levels"), _components,
                 lambda r: {k: [(x["n"], round(x["delta"], 3)) for x in v] for k, v in r["by_kind"].items()}),
    AnalysisSpec("sweep", "the critical set across alpha, K and the noise seed",
                 _sweep_grids, _sweep,
                 lambda r: [{k: x.get(k) for k in ("varied", "alpha", "samples", "seed", "n_star",
                                                   "jaccard_to_reference")} for x in r["rows"]]),
    AnalysisSpec("robustness", "the critical set on several texts, and their overlap",
                 lambda args: None, _robustness, _robustness_lines),
    AnalysisSpec("precision", "the scan in float32, bfloat16 and float16",
                 lambda args: parse_dtypes(args.dtypes), _precision,
                 lambda r: [{k: x.get(k) for k in ("dtype", "n_star", "delta", "delta_in_float32", "error")}
                            for x in r["rows"]]),
)}


def analysis_name(name: str) -> str:
    """argparse type for NAME: a registered analysis, or one line with the closest one."""
    if name in ANALYSES:
        return name
    import difflib
    close = difflib.get_close_matches(name, list(ANALYSES), n=1)
    raise argparse.ArgumentTypeError(f"unknown analysis {name!r}: {f'did you mean {close[0]!r}? ' if close else ''}"
                                     f"use one of {', '.join(ANALYSES)}")


def _check(args) -> None:
    """Every argument of the analysis, before the model loads."""
    check_noise_args(args)
    finite(args.epsilon, "--epsilon")
    if args.max_n is not None and args.max_n < 1:
        raise LesionError(f"--max-n must be >= 1 (got {args.max_n})")
    ANALYSES[args.name].check(args)


def run(args) -> int:
    from ..results import save_result as write_result
    from ..runfolder import RunFolder, analysis_name as file_name
    from ..texts import read_text
    from .common import check_out

    _check(args)
    folder = RunFolder(args.out_dir)
    check_out(folder.file(file_name(args.name)))
    given = read_text(args.text, args.text_file) if args.text is not None or args.text_file else None
    rank_options = dict(alpha=args.alpha, samples=args.samples, seed=args.seed, progress=progress_enabled(args))
    spec = ANALYSES[args.name]
    result, settings = spec.compute(args, Inputs(folder, given, rank_options))
    settings.pop("progress", None)
    path = write_result(folder.file(file_name(args.name)),
                        {"analysis": args.name, "model": args.model, **result, "settings": settings})
    lines = spec.lines(result)
    for key, value in (lines.items() if isinstance(lines, dict) else enumerate(lines)):
        console.print(f"{key}: {json.dumps(value, default=str)}", soft_wrap=True)
    console.print(f"wrote {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("analyze", help=" | ".join(ANALYSES), epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", type=analysis_name, choices=list(ANALYSES), metavar="NAME",
                   help="; ".join(f"{s.name}: {s.summary}" for s in ANALYSES.values()))
    add_model_args(p)
    add_text_args(p)
    p.add_argument("--out-dir", default="lesion-run", help="scan folder: read ranking/critical, write analysis")
    add_noise_args(p)
    p.add_argument("--epsilon", type=float, default=1.0)
    add_stage2_search_arg(p)
    p.add_argument("--top-k", default="10,100,1000", help="distribution: top-k sets to count")
    p.add_argument("--max-n", type=int, default=None, help="phase: largest n on the curve")
    p.add_argument("--levels", default="1,3,10,100,1000", help="components: top-n per kind")
    p.add_argument("--kinds", default=None, help="components: kinds to compare (default: all)")
    p.add_argument("--alphas", default="1,3,5,7,10", help="sweep: alpha grid ('' for none)")
    p.add_argument("--sample-grid", default="25,50,75,100,125", help="sweep: K grid ('' for none)")
    p.add_argument("--seed-grid", default="43,44",
                   help="sweep: other noise seeds at the reference alpha and K ('' for none)")
    p.add_argument("--dtypes", default="float32,bfloat16,float16", help="precision: dtypes")
    p.add_argument("--passages", type=int, default=0, metavar="N",
                   help="robustness: N passages drawn from --corpus instead of lesion's ten texts")
    p.add_argument("--corpus", default="enwiki-gensim", help="robustness: corpus for --passages (name or path)")
    add_common_flags(p)
    p.set_defaults(run=run)


