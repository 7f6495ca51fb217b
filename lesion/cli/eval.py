"""`lesion eval`: corpus perplexity and downstream tasks, with and without the critical set."""
from __future__ import annotations

import argparse
import time

from rich.table import Table

from ..errors import LesionError
from .common import (add_common_flags, add_model_args, check_out, console, critical_neurons, fmt, load,
                     progress_enabled, read_critical)
from .tables import add_json_flag

EXAMPLES = """examples:
  lesion eval --neurons lesion-run/critical.json --corpus enwiki-gensim --max-tokens 20000
  lesion eval --neurons critical.json --levels 0,1,2,all --corpus wikitext-103 --corpus my_texts/
  lesion eval --neurons critical.json --corpus none --tasks lesion_wiki_cloze,lesion_mmlu_dev --limit 100
  lesion eval --neurons critical.json --corpus none --humaneval 20
  lesion eval --neurons critical.json --corpus none --ifbench 20
"""


def register(sub) -> None:
    p = sub.add_parser("eval", help="perplexity on corpora and downstream scores, masked vs not",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--neurons", required=True, help="critical.json from lesion scan/identify")
    p.add_argument("--levels", default="0,all", help="mask the first n neurons: e.g. 0,all or 0,1,2,5")
    p.add_argument("--corpus", action="append", default=None,
                   help="enwiki-gensim (offline), wikitext-103, c4, a .txt/.jsonl file or folder; repeatable; "
                        "'none' for tasks only (default: enwiki-gensim)")
    p.add_argument("--max-tokens", type=int, default=20000, help="tokens per corpus (0: all)")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--stride", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward")
    p.add_argument("--tasks", default=None, help="comma-separated lm-eval tasks (offline: lesion_wiki_cloze, "
                                                 "lesion_mmlu_dev)")
    p.add_argument("--limit", type=int, default=None, help="documents per lm-eval task")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--humaneval", type=int, default=0, metavar="N", help="also run the first N HumanEval problems")
    p.add_argument("--ifbench", type=int, default=0, metavar="N",
                   help="also run N IFBench prompts, spread over the 294 (chat template, greedy; strict and loose checks)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="reply length limit for --ifbench")
    p.add_argument("--out", default="lesion-run/eval.json", help="the report reads RUN_DIR/eval.json")
    add_common_flags(p)
    p.set_defaults(run=run)
    add_json_flag(p, lambda args: args.out)


def parse_levels(text: str, n_neurons: int) -> list[int]:
    levels = set()
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            levels.add(n_neurons)
        elif part.isdigit() and int(part) <= n_neurons:
            levels.add(int(part))
        else:
            raise LesionError(f"bad level {part!r} in --levels: use 'all' or whole numbers 0..{n_neurons}")
    return sorted(levels | {0})


def run(args) -> int:
    from ..evaluation.corpora import CHARS_PER_TOKEN, load_corpus
    from ..evaluation.perplexity import CorpusEval, corpus_perplexity
    from ..neurons import discover_sites
    from ..study import model_provenance
    from ..files import write_json

    if args.max_tokens < 0 or args.window < 2 or not 1 <= args.stride <= args.window:
        raise LesionError("need --max-tokens >= 0, --window >= 2 and 1 <= --stride <= --window")
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1) or args.humaneval < 0:
        raise LesionError("need --batch-size >= 1, --limit >= 1 and --humaneval >= 0")
    check_out(args.out)
    corpora = [c for c in (args.corpus or ["enwiki-gensim"]) if c != "none"]
    tasks = [t for t in (args.tasks or "").split(",") if t]
    if args.ifbench < 0 or args.max_new_tokens < 1:
        raise LesionError("need --ifbench >= 0 and --max-new-tokens >= 1")
    if not (corpora or tasks or args.humaneval or args.ifbench):
        raise LesionError("nothing to evaluate: give a --corpus, --tasks, --humaneval N or --ifbench N")
    if args.ifbench:
        from ..evaluation.ifbench import require_packages
        require_packages()
    critical = read_critical(args.neurons)
    levels = parse_levels(args.levels, len(critical.neurons))
    lm = load(args, recorded=critical.settings)
    neurons = critical_neurons(critical, lm)
    from ..recorded import zero_only_note
    from ..texts import check_fits
    check_fits(lm.model, args.window, "--window", "pass a --window no longer than the context")
    zero_only_note(critical.settings, args.neurons, console.print)
    index = discover_sites(lm.model, "all")
    report: dict = {"model": lm.name, "neurons": [str(n) for n in neurons], "levels": levels,
                    "settings": {**model_provenance(lm), "window": args.window, "stride": args.stride, "max_tokens": args.max_tokens,
                                 "dtype": args.dtype, "loss_dtype": "float32"}}
    start = time.perf_counter()
    if corpora:
        results = []
        for spec in corpora:
            corpus = load_corpus(spec, args.max_tokens * CHARS_PER_TOKEN or None)
            results += corpus_perplexity(lm.model, lm.tokenizer, index, corpus.name, corpus.documents, neurons,
                                         levels, window=args.window, stride=args.stride,
                                         max_tokens=args.max_tokens or None, batch_size=args.batch_size,
                                         progress=progress_enabled(args))
        report["perplexity"] = CorpusEval(lm.name, tuple(report["neurons"]), tuple(results),
                                          report["settings"]).to_dict()["results"]
        print_perplexity(report["perplexity"])
    if tasks:
        from ..evaluation.harness import run_harness
        report["tasks"] = {str(level): run_harness(lm.model, lm.tokenizer, index, neurons[:level], tasks,
                                                   limit=args.limit, num_fewshot=args.num_fewshot)
                           for level in levels}
        print_tasks(report["tasks"])
    if args.humaneval:
        from ..evaluation.humaneval import outcome_summary, run_humaneval
        report["humaneval"] = {}
        for level in levels:
            r = run_humaneval(lm.model, lm.tokenizer, index, neurons[:level], limit=args.humaneval,
                              progress=progress_enabled(args))
            report["humaneval"][str(level)] = {"problems": r.problems, "passed": r.passed,
                                               "pass@1": r.pass_at_1, "outcomes": dict(zip(r.task_ids, r.outcomes))}
            console.print(f"HumanEval, {level} neurons masked: {r.passed}/{r.problems} passed "
                          f"({outcome_summary(r.outcomes)})")
    if args.ifbench:
        from ..evaluation.ifbench import run_ifbench
        report["ifbench"] = {}
        for level in levels:
            level_start = time.perf_counter()
            r = run_ifbench(lm.model, lm.tokenizer, index, neurons[:level], limit=args.ifbench,
                            max_new_tokens=args.max_new_tokens, progress=progress_enabled(args))
            report["ifbench"][str(level)] = {**r.to_dict(), "max_new_tokens": args.max_new_tokens,
                                             "seconds": round(time.perf_counter() - level_start, 1)}
        print_ifbench(report["ifbench"])
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_json(args.out, report)
    console.print(f"wrote {args.out}")
    return 0


def print_perplexity(rows: list[dict]) -> None:
    table = Table("corpus", "masked", "tokens", "perplexity", "log10 ratio", "non-finite tokens",
                  title="sliding-window perplexity")
    for r in rows:
        table.add_row(r["corpus"], str(r["level"]), str(r["tokens"]), fmt(r["ppl"]), fmt(r["log10_ratio"]),
                      str(r["nonfinite_tokens"]))
    console.print(table)


def print_tasks(by_level: dict) -> None:
    table = Table("task", "metric", *(f"{lvl} masked" for lvl in by_level), title="downstream tasks")
    first = next(iter(by_level.values()))
    for task, metrics in first.items():
        for metric in metrics:
            if metric != "sample_len":
                table.add_row(task, metric, *(fmt(by_level[lvl][task][metric]) for lvl in by_level))
    console.print(table)


def print_ifbench(by_level: dict) -> None:
    table = Table(title="IFBench (if-verifiable checkers)")
    for column in ("masked", "prompts", "prompt strict", "prompt loose", "instruction strict", "instruction loose",
                   "unchecked", "seconds"):
        table.add_column(column, overflow="fold")  # headers wrap on a narrow screen, never end in '…'
    for level, r in by_level.items():
        table.add_row(level, str(r["prompts"]), fmt(r["prompt_strict"]), fmt(r["prompt_loose"]),
                      fmt(r["instruction_strict"]), fmt(r["instruction_loose"]),
                      f"{r['unchecked_instructions']}/{r['instructions']}", str(r["seconds"]))
    console.print(table)
