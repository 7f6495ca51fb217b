"""`lesion analyze NAME`: the paper's analyses, each writing OUT_DIR/analysis-NAME.json."""
from __future__ import annotations

import argparse
import json

from ..errors import LesionError
from .common import (MAX_SAMPLES, add_common_flags, add_model_args, add_text_args, console, load,
                     progress_enabled)

EXAMPLES = """examples:
  lesion scan --out lesion-run                 # distribution and phase read its ranking and critical set
  lesion analyze distribution --out-dir lesion-run
  lesion analyze phase --out-dir lesion-run --max-n 30
  lesion analyze components --levels 1,10,100,1000
  lesion analyze sweep --alphas 1,3,5,7,10 --sample-grid 25,50,75,100,125
  lesion analyze robustness --samples 50
  lesion analyze precision --dtypes float32,bfloat16,float16
"""
NAMES = ("distribution", "phase", "components", "sweep", "robustness", "precision")


def register(sub) -> None:
    p = sub.add_parser("analyze", help="distribution | phase | components | sweep | robustness | precision",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=NAMES)
    add_model_args(p)
    add_text_args(p)
    p.add_argument("--out-dir", default="lesion-run", help="scan folder: read ranking/critical, write analysis")
    p.add_argument("--alpha", type=float, default=5.0)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--top-k", default="10,100,1000", help="distribution: top-k sets to count")
    p.add_argument("--max-n", type=int, default=None, help="phase: largest n on the curve")
    p.add_argument("--levels", default="1,3,10,100,1000", help="components: top-n per kind")
    p.add_argument("--kinds", default=None, help="components: kinds to compare (default: all)")
    p.add_argument("--alphas", default="1,3,5,7,10", help="sweep: alpha grid")
    p.add_argument("--sample-grid", default="25,50,75,100,125", help="sweep: K grid")
    p.add_argument("--dtypes", default="float32,bfloat16,float16", help="precision: dtypes")
    p.add_argument("--passages", type=int, default=0, metavar="N",
                   help="robustness: N passages drawn from --corpus instead of lesion's ten texts")
    p.add_argument("--corpus", default="enwiki-gensim", help="robustness: corpus for --passages (name or path)")
    add_common_flags(p)
    p.set_defaults(run=run)


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


def _check(args) -> None:
    """Every argument of the analysis, before the model loads."""
    from .common import check_seed, finite
    from .compare import parse_ints
    finite(args.alpha, "--alpha")
    finite(args.epsilon, "--epsilon")
    check_seed(args.seed)
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise LesionError(f"--samples must be >= 1 and <= {MAX_SAMPLES} (got {args.samples})")
    if args.max_n is not None and args.max_n < 1:
        raise LesionError(f"--max-n must be >= 1 (got {args.max_n})")
    checks = {"distribution": lambda: parse_ints(args.top_k, "--top-k"),
              "components": lambda: parse_ints(args.levels, "--levels"),
              "sweep": lambda: (parse_alphas(args.alphas), parse_ints(args.sample_grid, "--sample-grid")),
              "precision": lambda: parse_dtypes(args.dtypes)}
    checks.get(args.name, lambda: None)()


def parse_dtypes(text: str) -> list[str]:
    from .common import DTYPES
    dtypes = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        raise LesionError(f"--dtypes takes a comma-separated list of {', '.join(DTYPES)} "
                          f"(got {text!r})")
    return dtypes


def run(args) -> int:
    from .. import analysis
    from ..pipeline import Study, model_provenance
    from ..run import RunFolder, analysis_name, write_result
    from ..texts import BOOKENDS, read_text, text_hash
    from .common import check_out, resolve_model_args
    from .compare import parse_ints

    _check(args)
    folder = RunFolder(args.out_dir)
    check_out(folder.file(analysis_name(args.name)))
    given = read_text(args.text, args.text_file) if args.text is not None or args.text_file else None
    progress = progress_enabled(args)
    rank_options = dict(alpha=args.alpha, samples=args.samples, seed=args.seed, progress=progress)
    if args.name in ("distribution", "phase"):
        ranking, critical = folder.ranking(), folder.critical()
        study = folder.study(load(args, recorded=ranking.settings), given)
        settings = study.settings()
        if args.name == "distribution":
            result = analysis.distribution(study.index, ranking.neurons, critical.neurons,
                                           parse_ints(args.top_k, "--top-k"))
        else:
            result = analysis.phase_transition(study, ranking.neurons, critical.neurons, args.max_n,
                                               epsilon=critical.settings.get("epsilon", 1.0))
    elif args.name == "precision":
        resolve_model_args(args)
        text = given or BOOKENDS
        result = analysis.precision(args.model, text, parse_dtypes(args.dtypes), epsilon=args.epsilon,
                                    device=args.device, **rank_options)
        settings = {"model": args.model, "text_sha256": text_hash(text), "text": text, "epsilon": args.epsilon,
                    **rank_options}
    elif args.name == "robustness":
        texts = _robustness_texts(args)
        lm = load(args)
        result = analysis.robustness(lm, texts, epsilon=args.epsilon, **rank_options)
        settings = {**model_provenance(lm), "epsilon": args.epsilon, **rank_options,
                    "text_sha256": {name: text_hash(t) for name, t in texts.items()}}
    else:
        study = Study.create(load(args), given or BOOKENDS)
        if args.name == "components":
            kinds = args.kinds.split(",") if args.kinds else None
            result = analysis.component_ablation(study, kinds, parse_ints(args.levels, "--levels"), **rank_options)
        else:
            alphas = parse_alphas(args.alphas)
            rank_options.pop("alpha")
            rank_options.pop("samples")
            result = analysis.sensitivity_sweep(study, alphas, parse_ints(args.sample_grid, "--sample-grid"),
                                                ref_alpha=args.alpha, ref_samples=args.samples,
                                                epsilon=args.epsilon, **rank_options)
        settings = study.settings(**rank_options)
    settings.pop("progress", None)
    path = write_result(folder.file(analysis_name(args.name)),
                        {"analysis": args.name, "model": args.model, **result, "settings": settings})
    summary = _summary(args.name, result)
    for key, value in (summary.items() if isinstance(summary, dict) else enumerate(summary)):
        console.print(f"{key}: {json.dumps(value, default=str)}", soft_wrap=True)
    console.print(f"wrote {path}")
    return 0


def _summary(name: str, result: dict) -> dict:
    """A few lines for the console; the JSON file has everything."""
    if name == "distribution":
        return {"critical_by_kind": result["critical"]["by_kind"], "top100_by_kind": result.get("top100", {}).get("by_kind")}
    if name == "phase":
        return {"n_star": result["n_star"], "joint_delta": result["joint_delta"], "alone": result["alone"],
                "curve": [(p["n"], round(p["delta"], 3)) for p in result["curve"]]}
    if name == "components":
        return {k: [(r["n"], round(r["delta"], 3)) for r in v] for k, v in result["by_kind"].items()}
    if name == "sweep":
        return [{k: r[k] for k in ("varied", "alpha", "samples", "n_star", "jaccard_to_reference")} for r in result["rows"]]
    if name == "robustness":
        per_text = {k: {"tokens": v["tokens"], "n_star": v["n_star"], "neurons": v["neurons"][:5]}
                    for k, v in result["texts"].items()}
        return {**per_text, f"most common (of {len(per_text)} texts)": result["most_common"][:3]}
    return [{k: r.get(k) for k in ("dtype", "n_star", "delta", "delta_in_float32", "error")} for r in result["rows"]]
