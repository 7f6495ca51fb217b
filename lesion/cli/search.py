"""`lesion search`: the smallest heel lesion can find, irreducible and certified within a pool."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from ..errors import LesionError
from ..results.filenames import HEEL
from ..runtime.anytime import Stopped
from . import error_line, flag

if TYPE_CHECKING:
    from ..results import Portfolio, PortfolioRun
from .common import (add_common_flags, add_components_arg, add_model_args, add_noise_args, check_noise_args,
                     check_out, console, fmt, load, named, progress_enabled)
from .tables import shown, styled

EXAMPLES = """examples:
  lesion search --out heel.json                               # default model, Bookends text
  lesion search --model gemma3-270m --out gemma-heel.json
  lesion search --texts wikipedia,french,german,chinese --transfer   # one heel for every language
  lesion search --text-file de.txt --text-file fr.txt --objective mean
  lesion search --passages 4 --corpus enwiki-gensim --strategy topk --prune best-drop
  lesion mask --neurons heel.json                             # reproduces the heel's Delta (zero ablation)

strategies: greedy (forward selection over the screened pool), topk (first crossing of the
pool sorted by single Delta), prefix (the paper's greedy prefix of the noise ranking).
"""


def register(sub) -> None:
    from ..runtime.options import ABLATIONS, OBJECTIVES, PRUNERS, STRATEGIES
    from ..method.scorers import SIGNALS

    p = sub.add_parser("search", help="the smallest critical set: multi-signal screen, greedy selection, pruning",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    g = p.add_argument_group("texts (the objective is taken over all of them)")
    g.add_argument("--text", action="append", default=[], help="an input text (repeatable)")
    g.add_argument("--text-file", action="append", default=[], help="a file holding one input text (repeatable)")
    g.add_argument("--texts", default=None, metavar="NAMES",
                   help="lesion's own texts by name, comma-separated: wikipedia, news, biography, media, "
                        "french, german, spanish, chinese, short, long")
    g.add_argument("--passages", type=int, default=None, metavar="N", help="N passages drawn from --corpus")
    g.add_argument("--corpus", default="enwiki-gensim", help="corpus for --passages (name or path)")
    g.add_argument("--objective", default="worst", choices=OBJECTIVES,
                   help="worst: the heel must collapse every text (default); mean: on average")
    g.add_argument("--transfer", action="store_true",
                   help="also find each text's own heel and tabulate every heel's Delta on every text")
    add_components_arg(p)
    s = p.add_argument_group("search")
    s.add_argument("--epsilon", type=float, default=1.0, help="Delta threshold, log10 PPL ratio (paper: 1)")
    s.add_argument("--strategy", default="greedy", choices=STRATEGIES)
    s.add_argument("--prune", default="elimination", choices=PRUNERS,
                   help="elimination: delta debugging + one backward pass, O(n) rows; best-drop: O(n^2)")
    s.add_argument("--ablation", default="zero", choices=list(ABLATIONS),
                   help="zero (the paper), mean, position0 (zero at the first token only)")
    s.add_argument("--signals", default=",".join(SIGNALS),
                   help="candidate-pool signals, comma-separated")
    s.add_argument("--pool", type=int, default=100, help="top-m of each signal (per text) in the pool")
    s.add_argument("--rescreen", type=int, default=32, help="greedy: candidates re-evaluated per step")
    s.add_argument("--max-size", type=int, default=64, help="greedy/topk: largest set built")
    s.add_argument("--certify-rows", type=int, default=2000,
                   help="rows for the exhaustive check that no smaller set of the top screened exists")
    s.add_argument("--max-rows", type=int, default=20000, help="budget of masked rows for the whole search")
    s.add_argument("--time-budget", type=float, default=600.0, metavar="SECONDS",
                   help="wall-clock budget for the whole search after the model is loaded (default 600); "
                        "on either budget, Ctrl-C or SIGTERM the best set so far is written")
    s.add_argument("--screen", type=int, default=0, metavar="N",
                   help="pool neurons masked alone; 0 (default): the share of the budget's rows the "
                        "measured cost of a row affords, chosen by attribution estimate and signal rank")
    s.add_argument("--resume", action="store_true",
                   help="continue the search whose sets are in OUT.sets.jsonl: no set is evaluated twice")
    n = p.add_argument_group("noise signal (stage 1)")
    add_noise_args(n)
    p.add_argument("--out", default=HEEL, help="JSON to write (same shape as critical.json)")
    add_common_flags(p)
    p.set_defaults(run=run)


def plan_from(args):
    from ..heel import SearchPlan
    plan = SearchPlan(epsilon=args.epsilon, strategy=args.strategy, prune=args.prune, ablation=args.ablation,
                      objective=args.objective, rescreen=args.rescreen, max_size=args.max_size,
                      certify_rows=args.certify_rows, max_rows=args.max_rows, screen=args.screen,
                      time_budget=args.time_budget)
    plan.check()
    return plan


def texts_from(args) -> tuple[list[str], list[str]]:
    """(names, texts): every --text, every --text-file, then --texts, then --passages; the Bookends
    default alone. A list, not a mapping: a file may share a name with one of lesion's texts."""
    from ..texts.passages import corpus_passages
    from ..texts.named import named_texts
    from ..texts.text import BOOKENDS, read_text
    named = [(f"text{i + 1}", read_text(t)) for i, t in enumerate(args.text)]
    named += [(name, read_text(None, f)) for name, f in zip(file_names(args.text_file), args.text_file)]
    if args.texts is not None:
        named += named_texts(args.texts.split(",")).items()
    if args.passages is not None:
        named += corpus_passages(args.corpus, args.passages, seed=args.seed).items()
    named = named or [("bookends", BOOKENDS)]
    return [n for n, _ in named], [t for _, t in named]


def file_names(files: list[str]) -> list[str]:
    """Each --text-file's name, or its path where two share a name (else the transfer table,
    keyed by name, would fold them into one row); a path given twice is numbered."""
    names = [Path(f).name for f in files]
    names = [str(Path(f)) if names.count(n) > 1 else n for f, n in zip(files, names)]
    return [f"{n}#{names[:i].count(n) + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def run(args) -> int:
    from ..heel import search_heel, search_with_transfer
    from ..heel.journal import check_journal, journal_path
    from ..heel.search import check_pool, check_transfer, text_names
    from ..results import save_result as write_result
    from ..method.scorers import check_signals

    plan = plan_from(args)
    check_pool(args.pool)
    check_noise_args(args)
    check_out(args.out)
    check_signals(args.signals)  # the library's check, before the model loads
    names, texts = texts_from(args)
    names, texts = text_names(texts, names)  # the library's check of the texts, before the load
    if args.transfer:
        check_transfer(texts)
    journal = check_journal(journal_path(args.out), args.resume)  # before the model loads
    lm = load(args)
    progress = progress_enabled(args)
    options = dict(signals=args.signals.split(","), per_signal=args.pool, components=args.components,
                   progress=progress, noise_options={"alpha": args.alpha, "samples": args.samples, "seed": args.seed},
                   say=(lambda stage: console.print(f"{stage}...", style="dim")) if progress else None,
                   journal=journal, resume=args.resume)
    from ..runtime.anytime import sigterm_as_interrupt
    with sigterm_as_interrupt():
        heel = (search_with_transfer(lm, texts, names, plan, **options) if args.transfer
                else search_heel(lm, texts, plan, names=names, **options))
    from ..runtime.distributed import agree
    if not agree():  # under torchrun: every rank finished, and only rank 0 writes
        return 0
    try:  # written before anything is printed about it: a print that fails loses nothing
        path = write_result(args.out, heel)
    except LesionError as e:  # a full disk: the one line still says what was found
        raise LesionError(f"{error_line(e)}; the search found {len(heel.neurons)} neuron(s), Delta {fmt(heel.delta)}: "
                          f"{' '.join(map(str, heel.neurons)) or 'none'}") from None
    print_heel(heel, names)
    if heel.screen.journal_failure:
        print(f"lesion: note: the journal {shown(journal)} stopped ({heel.screen.journal_failure}): "
              f"{flag('resume')} redoes the sets after those", file=sys.stderr)
    console.print(f"wrote {shown(path)}")
    if heel.stopped == Stopped.INTERRUPTED:
        print(f"lesion: interrupted: wrote the best set so far to {shown(path)}; {flag('resume')} continues",
              file=sys.stderr)
        return 130
    return 0


def print_heel(heel, names: list[str]) -> None:
    eps = heel.settings.epsilon_or_default
    head = (styled(("heel", "bold"), f": {len(heel.neurons)} neuron(s), Delta {fmt(heel.delta)} >= {eps:g}")
            if heel.reached else
            styled((f"no set reached Delta >= {eps:g}", "bold"), f" ({heel.stopped}); best set so far: "
                   f"{len(heel.neurons)} neuron(s), Delta {fmt(heel.delta)}"))
    if not heel.neurons:
        head = (styled(("no set was evaluated", "bold"), f" within the budget: raise {flag('max_rows')} or "
                       f"{flag('time_budget')}") if heel.stopped == Stopped.BUDGET else
                styled((f"no set reached Delta >= {eps:g}", "bold"), f" ({heel.stopped}): no neurons"))
    console.print(head)
    if heel.profile:
        table = Table("#", "neuron", "Delta alone", "peak |a|", "at token")
        for i, row in enumerate(heel.profile, 1):
            table.add_row(str(i), row.neuron, "-" if row.alone is None else fmt(row.alone), fmt(row.peak_abs),
                          str(row.peak_position))
        console.print(table)
    stages = Table("stage", "rows", "seconds", "set size", "Delta")
    for s in heel.stages:
        stages.add_row(s.stage, str(s.rows), f"{s.seconds:.1f}", str(s.size), "-" if s.delta is None else fmt(s.delta))
    console.print(stages)
    cert = heel.certificate
    if cert.note:
        console.print(f"certificate: {named(cert.note)}")
    elif cert.present:
        sizes = ", ".join(f"size {k}: {fmt(v)}" for k, v in (cert.best_delta_by_size or {}).items())
        if cert.smaller_set:
            verdict = f"a smaller set was found and replaced the pruned one ({len(cert.smaller_set)} neurons)"
        elif cert.certified:
            verdict = f"no smaller set among the top {cert.pool} screened neurons"
        else:
            verdict = "not certified (search cut short)"
        console.print(f"certificate: {verdict}; best Delta by size: {sizes}", soft_wrap=True)
    if len(heel.texts) > 1:
        per = Table("text", "tokens", "baseline PPL", "Delta")
        for name, t in zip(names, heel.texts):
            per.add_row(shown(name), str(t.tokens), fmt(t.baseline_ppl), fmt(t.delta))
        console.print(per)
    if heel.transfer:
        tr = Table("heel \\ text", "size", *map(shown, heel.transfer.texts))
        for label, row in heel.transfer.rows.items():
            tr.add_row(shown(label), str(len(row.neurons)), *("-" if d is None else fmt(d) for d in row.deltas))
        console.print(tr)
    if heel.portfolio and heel.neurons:  # with no set there is nothing one part found
        console.print(portfolio_line(heel.portfolio), soft_wrap=True)
    rate = f", {heel.rows / heel.seconds:.3g} rows/s" if heel.seconds else ""
    console.print(f"{heel.rows} masked rows in all, {heel.seconds:.1f} s{rate}; stopped: {heel.stopped}")
    estimate = heel.screen.estimate
    if estimate is not None and estimate.spearman is not None:
        console.print(f"first-order estimate vs masked Delta of the {estimate.masked} screened: "
                      f"Spearman {estimate.spearman:.2f}")


def portfolio_line(portfolio: Portfolio) -> str:
    """Which part of the portfolio found the answer, and what each part found (or why it did not run)."""
    def part(p: PortfolioRun) -> str:
        if p.ran is False:
            return f"{p.name}: not run ({named(p.why)})"
        outcome = {Stopped.BUDGET: "its rows ran out", Stopped.INTERRUPTED: "interrupted"}.get(
            p.stopped or Stopped.COMPLETE, "no set reached" if p.name == "all" else "nothing smaller")
        return f"{p.name}: {str(p.size) + ' neuron(s)' if p.reached else outcome}, {p.rows} rows"
    who = portfolio.found_by
    source = {"all": "the search over every component", "certificate": "the certificate"}.get(
        who, f"the search restricted to {who} ({flag('components')} {who})")
    parts = portfolio.parts[1:]
    whys = {p.why for p in parts}
    if parts and len(whys) == 1 and None not in whys:
        return f"found by {source}; the portfolio's restricted parts did not run: {named(whys.pop())}"
    return f"found by {source}; portfolio: " + "; ".join(part(p) for p in portfolio.parts)
