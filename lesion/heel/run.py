"""The heel search's portfolio, run: the full search, then sub-searches restricted to other parts of
the pool while rows remain, and the :class:`~lesion.results.Heel` it returns (the steps themselves are
:mod:`.screen`, :mod:`.select`, :mod:`.prune`, :mod:`.certify`)."""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import islice
from typing import Callable, Iterator, Sequence

from ..errors import BudgetExhausted, LesionError, ParameterError
from ..masking.metrics import LN10, perplexity
from ..model.neurons import Neuron
from ..results import Certificate, Heel, Portfolio, Screen, Settings, Stage, Stopped, TextScore, TraceStep
from .scorer import SetScorer
from .certify import certify, certify_pool_for, rests_on
from .plan import PART_SHARE, PortfolioPart, STOPS, SearchPlan
from .prune import make_irreducible, prune_best_drop, prune_elimination
from .screen import SCREEN_SHARE, SCREEN_TOP, _finite, screen, screen_order, screened_so_far, spearman
from .select import first_crossing, greedy_selection


def find_smallest_heel(score: SetScorer, pool: Sequence[Neuron], plan: SearchPlan,
                       prefix_order: Callable[[], Sequence[Neuron]] | None = None,
                       model_name: str = "", settings: Settings | None = None, pool_info: dict | None = None,
                       text_info: Sequence[dict] = (), progress: Callable[[str], None] | None = None,
                       estimate: dict[Neuron, float] | None = None,
                       parts: Sequence[PortfolioPart] = ()) -> Heel:
    """Screen ``pool``, select, prune and certify under ``score``; see the module docstring.

    ``parts``: the portfolio's restricted sub-searches, run after the search of the whole ``pool``
    when they pay (its answer is larger than one neuron, or none reached epsilon), each within a
    share of the rows left; a part's answer replaces the best only when smaller, and the smallest
    is certified (``portfolio`` in the result says which part found it).

    Anytime: whatever stops it (``score``'s row or time budget, KeyboardInterrupt) the result is
    the best set evaluated so far (``stopped`` says why), with the screen, stages and trace so
    far. An interrupt before any set was evaluated propagates. ``estimate`` (a first-order
    Delta estimate per pool neuron) orders the screen and is checked against it (Spearman)."""
    plan.check()
    if not pool:
        raise ParameterError("per_signal", "gives an empty candidate pool: widen `signals` or raise it")
    started = time.perf_counter()
    trace: list[dict] = []
    stages: list[dict] = []
    order = screen_order(pool, estimate)

    def stage(name: str, fn: Callable[[], list[Neuron]]) -> list[Neuron]:
        if progress:
            progress(name)
        score.stage = name
        rows, start = score.rows, time.perf_counter()
        entry = {"stage": name, "rows": 0, "seconds": 0.0, "size": 0, "delta": None}
        stages.append(entry)
        found: list[Neuron] | None = None
        known_before = len(score.known)  # sets are added in order: this stage's are those after
        try:
            found = fn()
        finally:  # a stage cut short is recorded with what it ran
            entry.update(rows=score.rows - rows, seconds=round(time.perf_counter() - start, 3))
            if not found and name.rsplit(": ", 1)[-1] != "screen":
                # reached nothing, or cut short: the best set it evaluated (the screen's are single neurons)
                built = [(_finite(score.aggregate(d)), -len(k))
                         for k, d in islice(score.known.items(), known_before, None) if k]
                if built:
                    delta, size = max(built)
                    entry.update(size=-size, delta=delta)
        if found:
            entry.update(size=len(found), delta=score([found])[0])
        return found

    main = _search_part(score, order, plan, stage, prefix_order, trace)
    answer, stopped, sizing = main.answer, main.stopped, main.sizing
    orders = [order]
    portfolio: dict | None = None
    if parts:
        portfolio = {"found_by": "all", "parts": [main.record("all", len(pool))]}
        answer, stopped = _run_parts(score, parts, plan, stage, answer, stopped, portfolio, orders, trace)
    screened = screened_so_far(score, [n for o in orders for n in o]) if len(orders) > 1 else (
        main.screened or screened_so_far(score, order))
    if stopped == "reached":
        certificate = _certify_stage(score, screened, answer, plan, stage)
        stopped = certificate.pop("stopped", stopped)
    elif stopped == "not reached":
        certificate = _no_heel_evidence(score, screened, plan)
        stopped = certificate.pop("stopped", stopped)
        answer = score.best_found(plan.epsilon)
    else:
        answer = score.best_found(plan.epsilon)
        certificate = {"certified": False, "smaller_set": None, "best_delta_by_size": score.best_by_size(),
                       "note": f"stopped by {STOPS[stopped]}: the best set evaluated so far, neither pruned to "
                               "irreducible nor certified; `resume` continues the search"}
    if certificate.get("smaller_set"):
        answer, stopped = [Neuron.parse(s) for s in certificate["smaller_set"]], "reached"
        if portfolio is not None:
            portfolio["found_by"] = "certificate"
    # Deltas read from a resumed journal are re-scored, not believed, where the result states them:
    # what the answer rests on, and the screen's table (a forged single would be shown as measured)
    score.confirm(rests_on(score, answer) + [[n] for n, _ in screened[:SCREEN_TOP]])
    info = {**(pool_info or {}), "order": "estimate and signals, alternately" if estimate else "signals",
            **({"confirmed_sets": score.confirmed} if score.confirmed else {}),
            **({"sizing": sizing} if sizing else {}), **_estimate_check(estimate, screened)}
    heel = _heel(score, answer, plan, stopped, screened, certificate, stages, trace, model_name,
                 settings or Settings(), info, text_info, len(pool), time.perf_counter() - started)
    return heel if portfolio is None else replace(heel, portfolio=Portfolio.from_dict(portfolio))


@dataclass
class _PartRun:
    """What one part of the portfolio (or the whole search) found, and how it ended."""
    answer: list[Neuron]
    stopped: str  # reached, not reached, budget, interrupted
    screened: list[tuple[Neuron, float]]
    sizing: dict
    rows: int
    seconds: float

    def record(self, name: str, pool: int, **extra) -> dict:
        return {"name": name, "pool": pool, "screened": len(self.screened), "size": len(self.answer),
                "reached": self.stopped == "reached", "stopped": self.stopped, "rows": self.rows,
                "seconds": round(self.seconds, 3), **extra}


def _search_part(score: SetScorer, order: Sequence[Neuron], plan: SearchPlan, stage, prefix_order,
                 trace: list, label: str = "") -> _PartRun:
    """Screen, select and prune one pool; ``label`` names a portfolio part in its stages and trace."""
    rows, start = score.rows, time.perf_counter()
    answer: list[Neuron] = []
    stopped = "reached"
    screened: list[tuple[Neuron, float]] = []
    sizing: dict = {}
    steps: list[dict] = []
    named = (lambda name: f"{label}: {name}") if label else (lambda name: name)
    try:
        screened = _screen_stage(score, order, stage, plan, sizing, named("screen"))
        importance = dict(screened)
        answer = stage(named(plan.strategy), lambda: _select(score, screened, plan, prefix_order, steps))
        if not answer:
            stopped = "not reached"
        elif plan.prune == "elimination":
            answer = stage(named("prune"), lambda: prune_elimination(score, answer, plan.epsilon, importance, steps))
        elif plan.prune == "best-drop":
            answer = stage(named("prune"), lambda: make_irreducible(
                score, prune_best_drop(score, answer, plan.epsilon, steps), plan.epsilon, steps))
    except BudgetExhausted:
        stopped = "budget"
    except KeyboardInterrupt:
        if not score.known:
            raise
        stopped = "interrupted"
    finally:
        trace.extend({**step, "part": label} if label else step for step in steps)
    return _PartRun(answer if stopped == "reached" else [], stopped, screened or screened_so_far(score, order),
                    sizing, score.rows - rows, time.perf_counter() - start)


def _run_parts(score: SetScorer, parts: Sequence[PortfolioPart], plan: SearchPlan, stage, answer: list[Neuron],
               stopped: str, portfolio: dict, orders: list, trace: list) -> tuple[list[Neuron], str]:
    """The portfolio's parts after the whole search, while they pay: each searches its pool within
    PART_SHARE of the rows left, and its answer wins when it is smaller than the best so far."""
    for part in parts:
        record = {"name": part.name, "pool": len(part.pool)}
        why = _why_not(plan, answer, stopped, part)
        if why is None and score.rows_affordable() < 1:
            why = "the budget was spent"
        if why is not None:
            portfolio["parts"].append({**record, "ran": False, "why": why})
            continue
        order = screen_order(part.pool, part.estimate)
        orders.append(order)
        # Greedy is not capped below the best size (a larger greedy set can prune to a smaller one), except
        # when only a single neuron can win: then the screen is the whole search (greedy could take only a
        # screened single), and a certificate of a pair costs nothing, so the last part may take every row left.
        single = stopped == "reached" and len(answer) == 2
        part_plan = replace(plan, screen=len(part.pool) if single else 0, max_size=1 if single else plan.max_size)
        share = 1.0 if single and part is parts[-1] else PART_SHARE
        with _allowance(score, score.rows_affordable() * share):
            run = _search_part(score, order, part_plan, stage, None, trace, part.name)
        portfolio["parts"].append(run.record(part.name, len(part.pool), ran=True))
        # A part cut short (its share of the rows, an interrupt) may still have evaluated a smaller set
        # that reaches epsilon: the best set so far, unpruned.
        found = run.answer if run.stopped == "reached" else score.best_found(plan.epsilon)
        if found and score([found])[0] >= plan.epsilon and (stopped != "reached" or len(found) < len(answer)):
            answer, stopped = found, "reached"
            portfolio["found_by"] = part.name
        if run.stopped == "interrupted":
            return answer, "interrupted"
    return answer, stopped


def _why_not(plan: SearchPlan, answer: list[Neuron], stopped: str, part: PortfolioPart) -> str | None:
    """Why a part would not pay, or None when it may."""
    if stopped not in ("reached", "not reached"):
        return f"the search was stopped by {STOPS[stopped]}"
    if plan.strategy == "prefix":
        return "the prefix strategy follows one ranking of every neuron"
    if stopped == "reached" and len(answer) <= 1:
        return "the heel is one neuron: nothing smaller exists"
    if not part.pool:
        return "no signal scores a neuron of this part"
    return None


@contextmanager
def _allowance(score: SetScorer, rows: float) -> Iterator[None]:
    """Within the block the scorer's row budget ends ``rows`` (per text) from now, or sooner."""
    before = score.max_rows
    score.max_rows = min(before, score.rows + int(rows) * score.texts)
    try:
        yield
    finally:
        score.max_rows = before


def _estimate_check(estimate: dict[Neuron, float] | None, screened) -> dict:
    """How well the first-order estimate ranked the candidates that were then masked alone."""
    if not estimate:
        return {}
    pairs = [(estimate[n], d) for n, d in screened if n in estimate]
    rho = spearman([e for e, _ in pairs], [d for _, d in pairs])
    return {"estimate": {"signal": "attribution", "masked": len(pairs),
                         "spearman": None if rho is None else round(rho, 4)}}


def _screen_stage(score, order, stage, plan: SearchPlan, sizing: dict,
                  name: str = "screen") -> list[tuple[Neuron, float]]:
    holder: list = []

    def limit(done: int) -> int:
        if plan.screen:
            return plan.screen
        if done and "screen" not in sizing:
            # Sized once, after the first chunk timed a batch of masked rows.
            affordable = score.rows_affordable()
            share = affordable * SCREEN_SHARE
            sizing.update(row_seconds=round(score.row_seconds(), 4),
                          affordable_rows=None if math.isinf(affordable) else int(affordable + done),
                          screen=len(order) if share >= len(order) - done else done + int(share))
        return sizing.get("screen", len(order))

    def run() -> list[Neuron]:
        try:
            holder.extend(screen(score, order, plan.epsilon, limit))
        except (BudgetExhausted, KeyboardInterrupt):
            holder.extend(screened_so_far(score, order))
            raise
        return []
    stage(name, run)
    return holder


def _select(score: SetScorer, screened, plan: SearchPlan, prefix_order, trace) -> list[Neuron]:
    if plan.strategy == "greedy":
        found = greedy_selection(score, screened, plan.epsilon, plan.rescreen, plan.max_size, trace)
        return found if score([found])[0] >= plan.epsilon else []
    if plan.strategy == "topk":
        return first_crossing(score, [n for n, _ in screened][:plan.max_size], plan.epsilon, trace, "topk")
    if prefix_order is None:
        raise LesionError("the prefix strategy needs a ranking")
    return first_crossing(score, list(prefix_order()), plan.epsilon, trace, "prefix")


def _certify_stage(score, screened, answer, plan: SearchPlan, stage) -> dict:
    if len(answer) <= 1:
        return {"pool": 0, "certified": bool(answer), "smaller_set": None, "rows": 0,
                "best_delta_by_size": {1: screened[0][1]} if screened else {},
                "note": "a single neuron: nothing smaller exists"}
    pool = certify_pool_for(len(answer), _rows_left(score, plan.certify_rows))
    result: dict = {}

    def run() -> list[Neuron]:
        try:
            result.update(certify(score, screened, answer, plan.epsilon, pool))
        except BudgetExhausted:
            result.update({"pool": pool, "certified": False, "smaller_set": None, "stopped": "budget",
                           "note": "stopped by the budget while certifying: irreducible, not certified"})
        except KeyboardInterrupt:
            result.update({"pool": pool, "certified": False, "smaller_set": None, "stopped": "interrupted",
                           "note": "interrupted while certifying: irreducible, not certified"})
        return [Neuron.parse(s) for s in result.get("smaller_set") or []] or list(answer)
    stage("certify", run)
    return result


def _rows_left(score: SetScorer, cap: int) -> int:
    """Rows the certificate may take: ``cap``, or fewer when the budget affords fewer."""
    return max(0, int(min(cap, score.rows_affordable() * 0.9)))


def _no_heel_evidence(score: SetScorer, screened, plan: SearchPlan) -> dict:
    """No set reached epsilon: say how far the best single and the best pair of the top
    screened neurons get, so that "no small heel" is a measured statement."""
    pool = certify_pool_for(3, _rows_left(score, max(plan.certify_rows, 0)))
    if not screened:
        return {"note": "nothing was screened"}
    try:
        evidence = certify(score, screened, [None, None, None], plan.epsilon, pool)
    except (BudgetExhausted, KeyboardInterrupt) as stop:
        return {"note": "no set reached epsilon; the budget ran out before the best pairs were tried",
                "best_delta_by_size": score.best_by_size(), "certified": False,
                "stopped": "budget" if isinstance(stop, BudgetExhausted) else "interrupted"}
    return {**evidence, "certified": False,
            "note": f"no set reached epsilon; best single Delta {screened[0][1]:.3g}, best pair of the top "
                    f"{evidence['pool']} screened {evidence['best_delta_by_size'].get(2, math.nan):.3g}"}


def _heel(score: SetScorer, answer, plan: SearchPlan, stopped, screened, certificate, stages, trace,
          model_name, settings, pool_info, text_info, pool_size: int, seconds: float) -> Heel:
    per_text = score.per_text([answer])[0] if answer else tuple(-math.inf for _ in range(score.texts))
    objective = score.aggregate(per_text) if answer else -math.inf
    texts = tuple(TextScore(**info, baseline_ppl=perplexity(clean), delta=d,
                            masked_ppl=perplexity(clean + d * LN10) if answer else None)
                  for info, clean, d in zip(_pad(text_info, score.texts), score.clean, per_text))
    if plan.objective == "worst" and answer:
        which = min(range(len(per_text)), key=lambda i: per_text[i])
        clean = score.clean[which]
    else:
        clean = sum(score.clean) / len(score.clean)  # geometric mean of the perplexities
    reached = bool(answer) and objective >= plan.epsilon
    if stopped == "reached" and not reached:
        stopped = "not reached"
    screen_info = {**pool_info, "pool": pool_size, "screened": len(screened),
                   "top": [{"neuron": str(n), "delta": d} for n, d in screened[:SCREEN_TOP]],
                   "heel_alone": {str(n): score.aggregate(score.known[frozenset([n])]) for n in answer
                                  if frozenset([n]) in score.known}}
    return Heel(model_name, tuple(answer), reached, objective, perplexity(clean),
                perplexity(clean + objective * LN10) if answer else math.nan, score.rows, texts,
                tuple(Stage(**s) for s in stages), Screen.of(screen_info), Certificate.of(certificate),
                tuple(TraceStep.of(t) for t in trace),
                Stopped(stopped), settings.merged({k: getattr(plan, k) for k in plan.__dataclass_fields__}),
                seconds=round(seconds, 3))


def _pad(info: Sequence[dict], n: int) -> list[dict]:
    return list(info) + [{} for _ in range(n - len(info))]
