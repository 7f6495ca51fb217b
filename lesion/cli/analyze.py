"""`lesion analyze NAME`: the paper's analyses, each writing OUT_DIR/analysis-NAME.json.

The analyses are registered once, in :mod:`lesion.analysis.registry` (name, help, what each
runs on, how it computes, what it prints); argparse's choices and the did-you-mean come from
there. This module parses the flags into each analysis' options, loads what it runs on, and
calls :func:`lesion.analysis.run_analysis`.
"""
from __future__ import annotations

import argparse
import json

from ..analysis.registry import REGISTRY as ANALYSES
from ..errors import ParameterError
from ..runtime.anytime import Stopped
from .common import (add_common_flags, add_model_args, add_noise_args, add_stage2_search_arg, add_text_args,
                     check_noise_args, console, load, progress_enabled)
from .compare import parse_ints
from .tables import shown

EXAMPLES = """examples:
  lesion scan --out lesion-run                 # distribution and phase read its ranking and critical set
  lesion analyze distribution --out-dir lesion-run
  lesion analyze phase --out-dir lesion-run --max-n 30
  lesion analyze components --levels 1,10,100,1000
  lesion analyze sweep --alphas 1,3,5,7,10 --sample-grid 25,50,75,100,125
  lesion analyze robustness --samples 50
  lesion analyze precision --dtypes float32,bfloat16,float16
"""


def parse_alphas(text: str) -> list[float]:
    try:
        return [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise ParameterError("alphas", f"takes comma-separated numbers, e.g. 1,3,5,7,10 (got {text!r})") from None


def parse_dtypes(text: str) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()]


def _sweep_grids(args) -> dict:
    try:
        seeds = [int(x) for x in args.seed_grid.split(",") if x.strip()]
    except ValueError:
        raise ParameterError("seed_grid", "takes comma-separated whole numbers, e.g. 43,44 ('' for none)") from None
    # '' leaves a grid out: --alphas '' --sample-grid '' --seed-grid 43,44 is a seed check alone.
    alphas = parse_alphas(args.alphas) if args.alphas.strip() else []
    samples = parse_ints(args.sample_grid, "sample_grid") if args.sample_grid.strip() else []
    return dict(alphas=alphas, sample_grid=samples, seed_grid=seeds, epsilon=args.epsilon, stage2=args.stage2,
                time_budget=args.time_budget)


# Each analysis' own options, from its flags; parsed (and so checked) before the model loads.
OPTIONS = {
    "distribution": lambda args: dict(top_k=parse_ints(args.top_k, "top_k")),
    "phase": lambda args: dict(max_n=args.max_n),
    "components": lambda args: dict(kinds=args.kinds.split(",") if args.kinds else None,
                                    levels=parse_ints(args.levels, "levels")),
    "sweep": _sweep_grids,
    "robustness": lambda args: dict(epsilon=args.epsilon, stage2=args.stage2, time_budget=args.time_budget),
    "precision": lambda args: dict(dtypes=parse_dtypes(args.dtypes), epsilon=args.epsilon, stage2=args.stage2),
}


def _robustness_texts(args) -> dict[str, str]:
    """lesion's ten texts (plus --text), or --passages N drawn from --corpus."""
    from ..analysis import TEXTS
    from ..texts.passages import corpus_passages
    from ..texts.text import read_text
    if args.passages:
        return corpus_passages(args.corpus, args.passages, seed=args.seed)
    given = {} if args.text is None and args.text_file is None else {"given": read_text(args.text, args.text_file)}
    return {**TEXTS, **given}


def _inputs(args, on: str, folder, text: str | None, rank_options: dict):
    """What the analysis runs on (see lesion.analysis.AnalysisInputs): loads the model once."""
    from ..analysis import AnalysisInputs
    if on == "run":
        ranking, critical = folder.ranking(), folder.critical()
        study = folder.study(load(args, recorded=ranking.settings), text)
        return AnalysisInputs(study=study, ranking=ranking, critical=critical, rank_options=rank_options)
    if on == "text":
        from ..method.study import Study
        from ..texts.text import BOOKENDS
        return AnalysisInputs(study=Study.create(load(args), text or BOOKENDS), rank_options=rank_options)
    if on == "model":
        texts = _robustness_texts(args)
        # A run folder's model, as other commands reading a run take it: never another model's
        # result written into a folder (which report would then refuse).
        from ..replay.runfolder import RANKING
        recorded = folder.settings() if folder.file(RANKING).is_file() else None
        lm = load(args, recorded=recorded)
        if recorded is not None:
            from ..method.study import check_same_model
            check_same_model(recorded, lm, "run folder's ranking")
        return AnalysisInputs(lm=lm, texts=texts, rank_options=rank_options)
    from .common import check_device, resolve_model_args
    resolve_model_args(args)
    check_device(args)
    if args.revision is not None:  # this analysis loads the model by name, once per dtype, at the default branch
        raise ParameterError("revision", "is not taken by this analysis, which loads the model once per dtype: "
                                         "drop it, or pass a local copy of that commit as `model`")
    return AnalysisInputs(model=args.model, text=text, device=args.device, rank_options=rank_options)


def analysis_name(name: str) -> str:
    """argparse type for NAME: a registered analysis, or one line with the closest one."""
    if name in ANALYSES:
        return name
    import difflib
    close = difflib.get_close_matches(name, list(ANALYSES), n=1)
    raise argparse.ArgumentTypeError(f"unknown analysis {name!r}: {f'did you mean {close[0]!r}? ' if close else ''}"
                                     f"use one of {', '.join(ANALYSES)}")


def _check(args) -> dict:
    """Every argument of the analysis, before the model loads; its own options."""
    from ..masking.metrics import check_epsilon
    check_noise_args(args)
    check_epsilon(args.epsilon)
    from ..analysis.registry import check_analysis_options
    from ..runtime.anytime import check_time_budget
    check_time_budget(args.time_budget)
    options = OPTIONS[args.name](args)
    if args.time_budget is not None:
        options.setdefault("time_budget", args.time_budget)  # the library refuses it where it would be ignored
    check_analysis_options(args.name, options)
    return options


def run(args) -> int:
    from ..analysis import run_analysis
    from ..replay.runfolder import RunFolder, analysis_name as file_name
    from ..texts.text import read_text
    from .common import check_out, exit_code

    options = _check(args)
    folder = RunFolder(args.out_dir)
    check_out(folder.file(file_name(args.name)), "out_dir", named=False)
    given = read_text(args.text, args.text_file) if args.text is not None or args.text_file else None
    rank_options = dict(alpha=args.alpha, samples=args.samples, seed=args.seed, progress=progress_enabled(args))
    inputs = _inputs(args, ANALYSES[args.name].on, folder, given, rank_options)
    result = run_analysis(args.name, inputs, **options)
    path = result.save(folder.file(file_name(args.name)))
    lines = ANALYSES[args.name].lines(result.data)
    stopped = getattr(result.data, "stopped", Stopped.COMPLETE)  # sweep and robustness stop between scans
    if stopped != Stopped.COMPLETE:
        console.print(f"{stopped}: the file holds the scans that finished")
    for key, value in (lines.items() if isinstance(lines, dict) else enumerate(lines)):
        console.print(f"{shown(key)}: {json.dumps(value, default=str)}", soft_wrap=True)
    console.print(f"wrote {shown(path)}")
    return exit_code(stopped, path)


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
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="sweep, robustness: stop after this many seconds (between scans) and write what finished")
    add_common_flags(p)
    p.set_defaults(run=run)


