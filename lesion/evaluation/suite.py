"""One call for what ``lesion eval`` does: corpus perplexity and downstream scores, with the
first ``level`` critical neurons masked, for each level."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..runtime.anytime import Anytime, check_time_budget
from ..errors import ParameterError
from ..model.neurons import Neuron, discover_sites
from ..results.evaluation import EvalReport
from ..results.settings import Settings


@dataclass(frozen=True)
class EvalPlan:
    """What to evaluate; validated once, here (errors name these fields)."""
    corpora: tuple[str, ...] = ("enwiki-gensim",)
    max_tokens: int | None = 20000  # per corpus; None or 0: all
    window: int = 512
    stride: int = 512
    batch_size: int = 4
    tasks: tuple[str, ...] = ()
    limit: int | None = None
    num_fewshot: int | None = None
    humaneval: int = 0
    ifbench: int = 0
    max_new_tokens: int = 256

    def check(self) -> None:
        least = {"max_tokens": 0, "window": 2, "batch_size": 1, "limit": 1, "num_fewshot": 0, "humaneval": 0,
                 "ifbench": 0, "max_new_tokens": 1}
        for name, low in least.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ParameterError(name, f"must be a whole number >= {low} (got {value!r})"
                                           + ("; 0 reads every token" if name == "max_tokens" else ""))
        if not 1 <= self.stride <= self.window:
            raise ParameterError("stride", f"must be 1..`window` ({self.window}), got {self.stride}: a larger "
                                           "stride would leave tokens unscored")
        if not (self.corpora or self.tasks or self.humaneval or self.ifbench):
            raise ParameterError("corpora", "names nothing to evaluate: give a corpus, `tasks`, `humaneval` or "
                                            "`ifbench`")

    def steps(self, levels: int) -> int:
        return levels * (len(self.corpora) + bool(self.tasks) + bool(self.humaneval) + bool(self.ifbench))


def check_levels(levels: Sequence[int | str], n_neurons: int) -> list[int]:
    """The levels to evaluate (how many critical neurons are masked; "all": every one), with 0."""
    chosen = [n_neurons if v == "all" else v for v in levels]
    bad = [v for v in chosen if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= n_neurons]
    if bad:
        raise ParameterError("levels", f"must be 'all' or whole numbers 0..{n_neurons} (got {bad[0]!r})")
    return sorted(set(chosen) | {0})  # type: ignore[arg-type]


def evaluate(lm, neurons: Sequence[Neuron], plan: EvalPlan = EvalPlan(), *,
             levels: Sequence[int | str] | None = None,
             time_budget: float | None = None, progress: bool = False) -> EvalReport:
    """Score ``lm`` with the first ``level`` of ``neurons`` masked, for each level (default: 0
    and all). Each (part, level) is a step; ``time_budget`` (seconds) or Ctrl-C stops the run
    between steps and the report keeps the steps that finished (``stopped``)."""
    from ..method.provenance import model_provenance
    from ..texts.text import check_fits

    plan.check()
    check_time_budget(time_budget)
    neurons = list(neurons)
    levels = check_levels([0, len(neurons)] if levels is None else list(levels), len(neurons))
    if plan.ifbench:
        from .ifbench import require_packages
        require_packages()
    if plan.tasks:  # before the corpora run: an unknown task refused after minutes of perplexity is minutes lost
        from .harness import check_tasks
        check_tasks(plan.tasks)
    if plan.corpora:
        check_fits(lm.model, plan.window, "window", "pass one no longer than the context")
    index = discover_sites(lm.model, "all")
    settings = Settings.of(model_provenance(lm), window=plan.window, stride=plan.stride,
                           max_tokens=plan.max_tokens or 0, loss_dtype="float32")
    parts: dict = {}
    run = Anytime(plan.steps(len(levels)), "eval", time_budget=time_budget, progress=progress)
    with run:
        _perplexity(lm, index, neurons, levels, plan, parts, run, progress)
        _by_level(parts, "tasks", plan.tasks, levels, run, lambda level: _tasks(lm, index, neurons[:level], plan))
        _by_level(parts, "humaneval", plan.humaneval, levels, run,
                  lambda level: _humaneval(lm, index, neurons[:level], plan, progress))
        _by_level(parts, "ifbench", plan.ifbench, levels, run,
                  lambda level: _ifbench(lm, index, neurons[:level], plan, progress))
    run.check_something_finished()  # an interrupt before the first step: no empty report
    parts = {name: part for name, part in parts.items() if part}  # a part stopped before its first level
    rows = parts.get("perplexity")
    return EvalReport(model=lm.name, neurons=tuple(map(str, neurons)), levels=tuple(levels), settings=settings,
                      perplexity=None if rows is None else tuple(rows), tasks=parts.get("tasks"),
                      humaneval=parts.get("humaneval"), ifbench=parts.get("ifbench"),
                      seconds=round(run.seconds, 1), stopped=run.stopped)


def _perplexity(lm, index, neurons, levels, plan: EvalPlan, parts: dict, run: Anytime, progress: bool) -> None:
    from dataclasses import asdict

    from ..texts.corpora import CHARS_PER_TOKEN, load_corpus
    from .perplexity import corpus_levels

    if not plan.corpora:
        return
    rows = parts["perplexity"] = []
    for spec in plan.corpora:
        corpus = load_corpus(spec, (plan.max_tokens or 0) * CHARS_PER_TOKEN or None)
        for result in corpus_levels(lm.model, lm.tokenizer, index, corpus.name, corpus.documents, neurons, levels,
                                    window=plan.window, stride=plan.stride, max_tokens=plan.max_tokens or None,
                                    batch_size=plan.batch_size, progress=progress):
            rows.append(asdict(result))
            run.step()


def _by_level(parts: dict, name: str, wanted, levels, run: Anytime, score) -> None:
    """``parts[name][str(level)] = score(level)`` for each level, one step each."""
    if not wanted:
        return
    parts[name] = {}
    for level in levels:
        parts[name][str(level)] = score(level)
        run.step()


def _tasks(lm, index, neurons, plan: EvalPlan) -> dict:
    from .harness import run_harness
    return run_harness(lm.model, lm.tokenizer, index, neurons, list(plan.tasks), limit=plan.limit,
                       num_fewshot=plan.num_fewshot)


def _humaneval(lm, index, neurons, plan: EvalPlan, progress: bool) -> dict:
    from .humaneval import run_humaneval
    r = run_humaneval(lm.model, lm.tokenizer, index, neurons, limit=plan.humaneval, progress=progress)
    return {"problems": r.problems, "passed": r.passed, "pass@1": r.pass_at_1,
            "outcomes": dict(zip(r.task_ids, r.outcomes))}


def _ifbench(lm, index, neurons, plan: EvalPlan, progress: bool) -> dict:
    from .ifbench import run_ifbench
    start = time.perf_counter()
    r = run_ifbench(lm.model, lm.tokenizer, index, neurons, limit=plan.ifbench, max_new_tokens=plan.max_new_tokens,
                    progress=progress)
    return {**r.to_dict(), "max_new_tokens": plan.max_new_tokens, "seconds": round(time.perf_counter() - start, 1)}
