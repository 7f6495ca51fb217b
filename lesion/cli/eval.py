"""`lesion eval`: corpus perplexity and downstream tasks, with and without the critical set."""
from __future__ import annotations

import argparse

from rich.table import Table

from ..runtime.anytime import Stopped
from .common import exit_code, stopped_why
from .common import (add_common_flags, add_model_args, check_out, console, critical_neurons, fmt, load,
                     progress_enabled, read_critical)
from .tables import add_json_flag, shown

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
                   help="also run N IFBench prompts, spread over the 294 (chat template, greedy; strict and "
                        "loose checks)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="reply length limit for --ifbench")
    p.add_argument("--out", default="lesion-run/eval.json", help="the report reads RUN_DIR/eval.json")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds (between levels) and write what finished")
    add_common_flags(p)
    p.set_defaults(run=run)
    add_json_flag(p, lambda args: args.out)


def level_words(text: str) -> list[int | str]:
    """--levels as the library takes them: numbers, and words ('all') left for it to judge."""
    return [int(part) if part.strip().isdigit() else part.strip() for part in text.split(",")]


def run(args) -> int:
    from ..evaluation.suite import EvalPlan, evaluate
    from ..replay.recorded import zero_only_note

    corpora = tuple(c for c in (args.corpus or ["enwiki-gensim"]) if c != "none")
    plan = EvalPlan(corpora=corpora, max_tokens=args.max_tokens, window=args.window, stride=args.stride,
                    batch_size=args.batch_size, tasks=tuple(t for t in (args.tasks or "").split(",") if t),
                    limit=args.limit, num_fewshot=args.num_fewshot, humaneval=args.humaneval,
                    ifbench=args.ifbench, max_new_tokens=args.max_new_tokens)
    plan.check()
    check_out(args.out)
    critical = read_critical(args.neurons)
    lm = load(args, recorded=critical.settings)
    neurons = critical_neurons(critical, lm)
    zero_only_note(critical.settings, args.neurons, console.print)
    report = evaluate(lm, neurons, plan, levels=level_words(args.levels), time_budget=args.time_budget,
                      progress=progress_enabled(args))
    path = report.save(args.out)  # written before anything is printed about it
    print_report(report)
    console.print(f"wrote {shown(path)}")
    return exit_code(report.stopped, path)


def print_report(report) -> None:
    if report.perplexity is not None:
        print_perplexity(list(report.perplexity))
    if report.tasks:
        print_tasks(report.tasks)
    for level, h in (report.humaneval or {}).items():
        from ..evaluation.humaneval import outcome_summary
        console.print(f"HumanEval, {level} neurons masked: {h['passed']}/{h['problems']} passed "
                      f"({outcome_summary(h['outcomes'].values())})")
    if report.ifbench:
        print_ifbench(report.ifbench)
    if report.stopped != Stopped.COMPLETE:
        console.print(f"{stopped_why(report.stopped)} after {report.seconds:.0f} s: the report holds the levels "
                      "that finished")


def print_perplexity(rows: list[dict]) -> None:
    table = Table("corpus", "masked", "tokens", "perplexity", "log10 ratio", "non-finite tokens",
                  title="sliding-window perplexity")
    for r in rows:
        table.add_row(shown(r["corpus"]), str(r["level"]), str(r["tokens"]), fmt(r["ppl"]), fmt(r["log10_ratio"]),
                      str(r["nonfinite_tokens"]))
    console.print(table)


def print_tasks(by_level: dict) -> None:
    table = Table("task", "metric", *(f"{lvl} masked" for lvl in by_level), title="downstream tasks")
    first = next(iter(by_level.values()))
    for task, metrics in first.items():
        for metric in metrics:
            if metric != "sample_len":
                table.add_row(shown(task), shown(metric), *(fmt(by_level[lvl][task][metric]) for lvl in by_level))
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
